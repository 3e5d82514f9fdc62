"""Ablating crosscoder latents inside the two real models (seed 003, figure 2).

    result = ablate(crosscoder, [base, variant], texts, {"variant-only": latents})
    result.summary()                                   # rows: set x model, mean/median/p90
    result.histogram("variant-only", "mean_abs_logit_change")   # base vs variant, shared edges

Both models (two `core.models.Teacher` objects that share a tokenizer, in the order of
`crosscoder.cfg.model_names`) read the same tokens. Per batch:

1. Each model's residual at the crosscoder's hook (`resid_post.L`, the output of block L) is
   captured; the crosscoder encodes the pair into latent activations f [B, T, F].
2. For each model m and each latent set S, a forward hook on block L adds
   delta_m = - sum_{j in S} f_j * W_dec[j, m]  (model m's decoder rows in its own units,
   `Crosscoder.decoder_directions(m)`) to every token but BOS and padding, and the model runs to
   its logits. The hook is removed in a `finally`, also on error or cancel.
3. Clean and ablated next-token distributions are compared per token.

Ablating latent j from model m removes what the crosscoder says j writes into m. A variant-only
latent has a (near) zero base decoder, so ablating it leaves the base model (nearly) unchanged
while the variant moves: that contrast is what figure 2(a) shows, for latents with normalized
relative norm > 0.5 (`parse_latent_set("rel>0.5")`).

Per-token metrics (positions t that are not BOS and have a real next token, so all three are
defined on the same tokens; natural logs):

    mean_abs_logit_change  mean over the vocabulary of |logit_ablated - logit_clean|
                           (the seed's "average logit change")
    kl                     KL(p_clean || p_ablated) of the next-token distributions
    loss_change            -log p_ablated(x_{t+1}) + log p_clean(x_{t+1})  (next-token loss)

Per document: the mean over its tokens. Histograms put base and variant on shared edges.

Baselines, so that a number means something:

- 'random-matched': for each latent of the set, a latent outside the set drawn at random from
  the same firing-frequency bucket (deciles of the frequencies of latents that fire on these
  texts; latents that never fire are matched with latents that never fire). Ablating it shows
  how much any set of equally busy latents moves the models.
- 'top-K%-frequency' (figure 2b): the K% most frequently firing latents on these texts, for K in
  `frequency_top` (the seed uses 0.5, 1, 2, 5, 10, 20).

Frequencies come from a first, cheap pass (the models stop after block L).
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from core.crosscoder.analysis import CLASSES, histogram, latent_contribution, latent_sets, relative_norms
from core.crosscoder.model import Crosscoder, CrosscoderError
from core.errors import DistillscopeError
from core.models import HookPoint, Teacher, capture
from core.progress import TaskState

METRICS = ("mean_abs_logit_change", "kl", "loss_change")
METRIC_HELP = {
    "mean_abs_logit_change": "mean over the vocabulary of |logit change|",
    "kl": "KL(clean || ablated) of the next-token distribution (nats)",
    "loss_change": "change of the next-token loss (nats; positive: worse)",
}
SEED_FREQUENCY_TOP = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
FREQUENCY_BUCKETS = 10
_ROWS_PER_CHUNK = 64  # positions per log-softmax chunk: bounds memory for 262k-token vocabularies


# ---------------------------------------------------------------------------------------------
# The pair, the hook, the tokens


def resolve_models(crosscoder: Crosscoder, models) -> list[Teacher]:
    """The crosscoder's models in its M-axis order from: a sequence of Teachers (in
    cfg.model_names order), a dict {model name: Teacher}, or an object with `.base` and
    `.variant` Teachers (a model pair). Checks widths and the shared tokenizer's vocabulary."""
    names = crosscoder.model_names
    if isinstance(models, Mapping):
        missing = [n for n in names if n not in models]
        if missing:
            raise CrosscoderError(f"No model given for {', '.join(missing)}.",
                                  f"Pass a model for each of the crosscoder's models ({', '.join(names)}).")
        out = [models[n] for n in names]
    elif hasattr(models, "base") and hasattr(models, "variant"):
        out = [models.base, models.variant]
    else:
        out = list(models)
    if len(out) != crosscoder.n_models:
        raise CrosscoderError(f"{len(out)} models given; the crosscoder reads {crosscoder.n_models} "
                              f"({', '.join(names)}).", "Pass the base model and its variant, in that order.")
    for name, t in zip(names, out):
        if not isinstance(t, Teacher):
            raise TypeError(f"Model '{name}' must be a core.models.Teacher, not {type(t).__name__}.")
        if t.d_model != crosscoder.d_in:
            raise CrosscoderError(f"Model '{name}' ({t.name}) has width {t.d_model}, but the crosscoder "
                                  f"reads {crosscoder.d_in}.",
                                  "Use the models the crosscoder was trained on.")
    first = out[0]
    for name, t in zip(names[1:], out[1:]):
        if t.tokenizer is not first.tokenizer and len(t.tokenizer) != len(first.tokenizer):
            raise CrosscoderError(f"Model '{name}' ({t.name}) has a vocabulary of {len(t.tokenizer):,} "
                                  f"tokens, '{names[0]}' ({first.name}) one of {len(first.tokenizer):,}.",
                                  "A crosscoder compares two models that share a tokenizer: a base "
                                  "model and its fine-tuned or distilled variant.")
    return out


def resolve_hook(crosscoder: Optional[Crosscoder] = None, hook: Union[str, HookPoint, None] = None) -> HookPoint:
    """The residual hook to work at: the crosscoder's cfg.hook, or `hook` (which must agree with
    it when both are given). Only block outputs (resid_post.L) can be ablated."""
    given = None
    if hook is not None and str(hook).strip():
        try:
            given = hook if isinstance(hook, HookPoint) else HookPoint.parse(str(hook))
        except ValueError as exc:
            raise CrosscoderError(str(exc), "e.g. resid_post.6")
    own = None
    if crosscoder is not None and crosscoder.cfg.hook:
        try:
            own = HookPoint.parse(crosscoder.cfg.hook)
        except ValueError as exc:
            raise CrosscoderError(f"The crosscoder's hook is invalid: {exc}", "Correct 'hook' in its cfg.json.")
    if own is not None and given is not None and own != given:
        raise CrosscoderError(f"The crosscoder was trained at {own.name}, not {given.name}.",
                              f"Leave out the hook, or give {own.name}.")
    point = own or given
    if point is None:
        raise CrosscoderError("The crosscoder does not record its hook.", "Give the hook, e.g. resid_post.6.")
    if point.kind != "resid_post":
        raise CrosscoderError(f"Only block outputs (resid_post.L) can be used here, not {point.name}.",
                              "Use a crosscoder trained on the residual stream.")
    return point


def tokenize_shared(models: Sequence[Teacher], texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of `texts` (BOS added), the same for every model, or a CrosscoderError naming
    the first text the models tokenize differently."""
    ids = models[0].tokenize(list(texts), max_length)
    for t in models[1:]:
        if t.tokenizer is models[0].tokenizer:
            continue
        other = t.tokenize(list(texts), max_length)
        for i, (a, b) in enumerate(zip(ids, other)):
            if a != b:
                raise CrosscoderError(f"{t.name} and {models[0].name} tokenize text {i + 1} differently "
                                      f"({texts[i][:40]!r}...).",
                                      "A crosscoder compares two models that share a tokenizer.")
    return ids


def _check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as strings, in order (document indices refer to them); an error when none
    holds anything but white space."""
    texts = ["" if t is None else str(t) for t in texts]
    if not any(t.strip() for t in texts):
        raise DistillscopeError("No text to run through the models.", "Pass at least one non-empty text.")
    return texts


def _batches(n: int, batch_size: int) -> Iterator[range]:
    if batch_size < 1:
        raise DistillscopeError(f"The batch size must be at least 1, not {batch_size}.", "e.g. 8")
    for start in range(0, n, batch_size):
        yield range(start, min(start + batch_size, n))


def _masks(teacher: Teacher, token_lists: list[list[int]]):
    from core.activations import pad_batch
    from core.steering import non_bos_mask

    ids, mask = pad_batch(token_lists, teacher.pad_id)
    return ids, mask, non_bos_mask(ids, mask, teacher.bos_id)


@torch.no_grad()
def paired_latents(crosscoder: Crosscoder, models: Sequence[Teacher], hook: HookPoint, ids: torch.Tensor,
                   mask: torch.Tensor, state: Optional[TaskState] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [B, T, M, D] float32 on the crosscoder's device, f [B, T, F]): each model's residual at
    `hook` on the same tokens, and the crosscoder's latent activations of the pair (eval mode)."""
    dev = crosscoder.W_dec.device
    xs = [capture(t, ids, mask, [hook], state)[hook].to(dev, torch.float32) for t in models]
    x = torch.stack(xs, dim=-2)
    was_training = crosscoder.training
    crosscoder.eval()
    try:
        f = crosscoder.encode(x)
    finally:
        crosscoder.train(was_training)
    return x, f.float()


@contextlib.contextmanager
def residual_edit(teacher: Teacher, layer: int, delta_BTD: torch.Tensor):
    """While inside: block `layer`'s output gets `delta_BTD` added (the pass must have the same
    [B, T] as delta; zero rows leave tokens alone). The hook goes first in line, so any other
    hook on the block sees the edited residual, and is removed on the way out, also on error."""
    delta = delta_BTD.to(teacher.device, teacher.dtype)

    def edit(module, args, output):
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        if hidden.shape != delta.shape:
            raise CrosscoderError(f"The ablation was prepared for a pass of shape {list(delta.shape)}, "
                                  f"but block {layer} produced {list(hidden.shape)}.",
                                  "Run the same batch the latents were computed on.")
        edited = hidden + delta.to(hidden.dtype)
        if isinstance(output, tuple):
            return (edited,) + tuple(output[1:])
        if isinstance(output, list):
            return [edited] + list(output[1:])
        return edited

    handle = teacher.layers[layer].register_forward_hook(edit, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def _logits(teacher: Teacher, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = teacher.model(input_ids=ids.to(teacher.device), attention_mask=mask.to(teacher.device), use_cache=False)
    return out.logits


@torch.no_grad()
def next_token_metrics(clean_BTV: torch.Tensor, ablated_BTV: torch.Tensor, ids_BT: torch.Tensor,
                       positions_BT: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per selected position (positions_BT [B, T] bool; the token after each must exist in
    ids_BT): {metric: [N] float64} for METRICS (see the module docstring), in row-major order."""
    B, T = positions_BT.shape
    pos = positions_BT.clone()
    pos[:, -1] = False  # no next token to score
    b_idx, t_idx = pos.nonzero(as_tuple=True)
    out = {m: [] for m in METRICS}
    dev = clean_BTV.device
    for start in range(0, b_idx.numel(), _ROWS_PER_CHUNK):
        bi = b_idx[start:start + _ROWS_PER_CHUNK].to(dev)
        ti = t_idx[start:start + _ROWS_PER_CHUNK].to(dev)
        c = clean_BTV[bi, ti].float()
        d = ablated_BTV[bi, ti].float() - c  # the logit change
        target = ids_BT.to(dev)[bi, ti + 1]
        lp_c = torch.log_softmax(c, -1)
        del c
        # With q = p_c (renormalized), E = sum_v q d and e = d - E (centred under q, so
        # sum_v q e = 0 exactly in real numbers):
        #   KL(p_c || p_a) = log sum_v q exp(e) = log1p(sum_v q (expm1(e) - e)),
        #   log Z_a - log Z_c = E + KL.
        # The sum holds only the non-negative second-order terms and an error in E enters
        # squared, so float32 keeps a KL of 1e-5 to about 1e-3 of itself, where a float32
        # logsumexp over a 262k vocabulary is off by 1e-5 and float64 is three times slower.
        p_c = lp_c.exp()
        p_c /= p_c.sum(-1, keepdim=True)
        E = (p_c * d).sum(-1)
        e = d - E[:, None]
        kl = torch.log1p((p_c * (torch.expm1(e) - e)).sum(-1))
        bad = ~torch.isfinite(kl)
        if bad.any():  # a logit change beyond float32's exp range: those rows in float64
            lp64 = lp_c[bad].double()
            kl[bad] = (torch.logsumexp(lp64 + d[bad].double(), -1) - E[bad].double()).float()
        kl = kl.clamp(min=0.0)
        del p_c, e
        out["mean_abs_logit_change"].append(d.abs().mean(-1).double())
        out["kl"].append(kl.double())
        out["loss_change"].append((E + kl - d.gather(-1, target[:, None])[:, 0]).double())
    return {m: (torch.cat(v).cpu() if v else torch.zeros(0, dtype=torch.float64)) for m, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Latent sets


def parse_latent_set(spec: str, crosscoder: Crosscoder, frequency=None) -> torch.Tensor:
    """Latent indices named by `spec`: a class of `latent_sets` ('variant-only', 'base-only',
    'shared', ...), 'rel>X' / 'rel<X' / 'rel>=X' / 'rel<=X' on the relative decoder norm
    (the seed's figure 2a uses rel>0.5), or an explicit list 'latents:3,17,42'."""
    text = str(spec).strip()
    if text in CLASSES:
        return latent_sets(crosscoder, frequency=frequency)[text]
    m = re.fullmatch(r"rel\s*(>=|<=|>|<)\s*([0-9]*\.?[0-9]+)", text)
    if m:
        op, value = m.group(1), float(m.group(2))
        rel = relative_norms(crosscoder)
        keep = {">": rel > value, "<": rel < value, ">=": rel >= value, "<=": rel <= value}[op]
        keep &= ~torch.isnan(rel)
        return keep.nonzero().flatten()
    if text.startswith("latents:"):
        parts = [p.strip() for p in text[len("latents:"):].split(",") if p.strip()]
        if not parts or not all(p.isdigit() for p in parts):
            raise CrosscoderError(f"'{text}' is not a list of latent indices.", "e.g. latents:3,17,42")
        idx = torch.tensor(sorted({int(p) for p in parts}), dtype=torch.long)
        if int(idx.max()) >= crosscoder.d_latent:
            raise CrosscoderError(f"Latent {int(idx.max())} does not exist; the crosscoder has "
                                  f"{crosscoder.d_latent} (0 to {crosscoder.d_latent - 1}).", "Check the list.")
        return idx
    raise CrosscoderError(f"'{text}' does not name a latent set.",
                          f"Use a class ({', '.join(CLASSES)}), a cut on the relative norm such as "
                          "rel>0.5, or latents:3,17,42.")


def frequency_buckets(frequency: torch.Tensor, n_buckets: int = FREQUENCY_BUCKETS) -> torch.Tensor:
    """Bucket per latent [F] long: -1 for latents that never fired, else 0..n_buckets-1 by the
    quantiles of the frequencies of latents that fired."""
    freq = torch.as_tensor(frequency, dtype=torch.float64).flatten()
    out = torch.full(freq.shape, -1, dtype=torch.long)
    live = freq > 0
    if live.any():
        qs = torch.quantile(freq[live], torch.linspace(0, 1, n_buckets + 1, dtype=torch.float64)[1:-1])
        out[live] = torch.bucketize(freq[live], qs, right=True)
    return out


def random_matched_set(latents, frequency, seed: int = 0, n_buckets: int = FREQUENCY_BUCKETS) -> torch.Tensor:
    """For each latent of `latents`, a different latent outside the set from the same frequency
    bucket (`frequency_buckets`), drawn without replacement; where a bucket runs out, the
    nearest bucket with latents left. Same size as `latents`, disjoint from it."""
    idx = torch.as_tensor(latents, dtype=torch.long).flatten()
    freq = torch.as_tensor(frequency, dtype=torch.float64).flatten()
    buckets = frequency_buckets(freq, n_buckets)
    g = torch.Generator().manual_seed(seed)
    taken = torch.zeros(freq.numel(), dtype=torch.bool)
    taken[idx] = True
    if int((~taken).sum()) < idx.numel():
        raise CrosscoderError(f"A random set of {idx.numel()} latents outside the set cannot be drawn "
                              f"from {freq.numel()} latents.", "Ablate a smaller set.")
    pools = {int(b): [] for b in buckets.unique()}
    order = torch.randperm(freq.numel(), generator=g).tolist()
    for j in order:
        if not taken[j]:
            pools[int(buckets[j])].append(j)
    out = []
    for j in idx.tolist():
        b = int(buckets[j])
        candidates = sorted((k for k in pools if pools[k]), key=lambda k: (abs(k - b), k))
        out.append(pools[candidates[0]].pop())
    return torch.tensor(sorted(out), dtype=torch.long)


def top_frequency_set(frequency, percent: float) -> torch.Tensor:
    """The ceil(percent% of F) most frequently firing latents (ties by index), only those that
    fired at all."""
    freq = torch.as_tensor(frequency, dtype=torch.float64).flatten()
    k = min(int(math.ceil(freq.numel() * percent / 100.0)), int((freq > 0).sum()))
    order = sorted(range(freq.numel()), key=lambda j: (-float(freq[j]), j))[:k]
    return torch.tensor(sorted(order), dtype=torch.long)


@torch.no_grad()
def firing_frequency(crosscoder: Crosscoder, models: Sequence[Teacher], token_lists: list[list[int]],
                     hook: HookPoint, batch_size: int = 8, state: Optional[TaskState] = None) -> torch.Tensor:
    """Fraction of non-BOS tokens on which each latent fires [F] (float64), from the models
    stopped after block L."""
    counts = torch.zeros(crosscoder.d_latent, dtype=torch.float64)
    n = 0
    batches = list(_batches(len(token_lists), batch_size))
    for i, rows in enumerate(batches):
        if state is not None:
            state.check_cancelled()
            state.report(i, len(batches), "Firing frequencies")
        ids, mask, keep = _masks(models[0], [token_lists[r] for r in rows])
        _, f = paired_latents(crosscoder, models, hook, ids, mask, state)
        k = keep.to(f.device)
        counts += ((f > 0) & k[..., None]).sum((0, 1)).double().cpu()
        n += int(keep.sum())
    return counts / max(n, 1)


# ---------------------------------------------------------------------------------------------
# The experiment


@dataclass
class AblationResult:
    """Everything `ablate` measured; plain data once built.

    sets: {set name: latent indices}; model_names: the crosscoder's models, in order;
    ablated_models: which of them were ablated; per_token[set][model][metric]: float64 arrays
    over the scored tokens (the same tokens for every set and model); token_document: the
    document index of each scored token; n_documents; frequency: per-latent firing frequency
    on these texts (None when no baseline needed it); hook."""

    sets: dict[str, list[int]]
    model_names: list[str]
    ablated_models: list[str]
    per_token: dict[str, dict[str, dict[str, np.ndarray]]]
    token_document: np.ndarray
    n_documents: int
    hook: str
    frequency: Optional[np.ndarray] = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.token_document.size)

    def per_document(self, set_name: str, model: str, metric: str = "mean_abs_logit_change") -> np.ndarray:
        """Mean of the metric over each document's scored tokens [n_documents] (NaN for a
        document with none)."""
        values = self.per_token[set_name][model][metric]
        sums = np.bincount(self.token_document, weights=values, minlength=self.n_documents)
        counts = np.bincount(self.token_document, minlength=self.n_documents)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def values(self, set_name: str, model: str, metric: str, level: str = "document") -> np.ndarray:
        if level == "document":
            v = self.per_document(set_name, model, metric)
            return v[np.isfinite(v)]
        if level == "token":
            return self.per_token[set_name][model][metric]
        raise ValueError(f"level must be 'document' or 'token', not {level!r}.")

    def histogram(self, set_name: str, metric: str = "mean_abs_logit_change", level: str = "document",
                  bins: int = 30, lo: Optional[float] = None, hi: Optional[float] = None) -> dict:
        """Histogram data of one set for each ablated model on shared edges, as figure 2 plots it:
        {'edges': [bins + 1], 'counts': {model: [bins]}, 'metric', 'level', 'set'}. The range
        defaults to [min(0, smallest), largest] over the ablated models."""
        vals = {m: self.values(set_name, m, metric, level) for m in self.ablated_models}
        everything = np.concatenate(list(vals.values())) if vals else np.zeros(0)
        if lo is None:
            lo = float(min(0.0, everything.min())) if everything.size else 0.0
        if hi is None:
            hi = float(everything.max()) if everything.size else 1.0
        if hi <= lo:
            hi = lo + 1e-9
        counts, edges = {}, None
        for m, v in vals.items():
            h = histogram(torch.from_numpy(np.asarray(v, dtype=np.float64)), bins, lo, hi)
            counts[m], edges = h["counts"], h["edges"]
        return {"set": set_name, "metric": metric, "level": level, "edges": edges, "counts": counts}

    def summary(self, metric: Optional[str] = None) -> list[dict]:
        """One row per (set, ablated model): latents, tokens, and per metric the mean over tokens,
        and the median and 90th percentile over documents."""
        rows = []
        for s, latents in self.sets.items():
            for m in self.ablated_models:
                row = {"set": s, "model": m, "n_latents": len(latents), "n_tokens": self.n_tokens}
                for met in ([metric] if metric else METRICS):
                    tok = self.per_token[s][m][met]
                    doc = self.values(s, m, met, "document")
                    row[f"{met}_mean"] = float(tok.mean()) if tok.size else float("nan")
                    row[f"{met}_doc_median"] = float(np.median(doc)) if doc.size else float("nan")
                    row[f"{met}_doc_p90"] = float(np.quantile(doc, 0.9)) if doc.size else float("nan")
                rows.append(row)
        return rows

    def to_json(self, bins: int = 30) -> dict:
        """Plain JSON-able data: summary rows, per-document values and histograms per set and
        metric (NaN written as null)."""
        def clean(x):
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        docs = {s: {m: {met: [clean(float(v)) for v in self.per_document(s, m, met)] for met in METRICS}
                    for m in self.ablated_models} for s in self.sets}
        return {
            "hook": self.hook, "model_names": self.model_names, "ablated_models": self.ablated_models,
            "sets": self.sets, "n_tokens": self.n_tokens, "n_documents": self.n_documents,
            "metrics": METRIC_HELP, "notes": self.notes,
            "summary": [{k: clean(v) for k, v in r.items()} for r in self.summary()],
            "per_document": docs,
            "histograms": {s: {met: self.histogram(s, met, bins=bins) for met in METRICS} for s in self.sets},
        }


def _as_sets(latents, crosscoder: Crosscoder) -> dict[str, torch.Tensor]:
    if isinstance(latents, Mapping):
        sets = dict(latents)
    else:
        sets = {"latents": latents}
    out = {}
    for name, idx in sets.items():
        if isinstance(idx, str):
            idx = parse_latent_set(idx, crosscoder)
        t = torch.as_tensor(idx, dtype=torch.long).flatten()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= crosscoder.d_latent):
            raise CrosscoderError(f"Set '{name}' holds latents outside 0..{crosscoder.d_latent - 1}.",
                                  "Check the latent indices.")
        out[str(name)] = t.unique()
    if not out:
        raise CrosscoderError("No latent set to ablate.", "Pass at least one set, e.g. the variant-only latents.")
    return out


@torch.no_grad()
def ablate(crosscoder: Crosscoder, models, texts: Sequence[str], latents,
           baselines: Sequence[str] = ("random-matched",), frequency_top: Sequence[float] = (),
           ablate_in: Optional[Sequence[Union[int, str]]] = None, hook: Union[str, HookPoint, None] = None,
           max_length: int = 64, batch_size: int = 4, seed: int = 0,
           state: Optional[TaskState] = None) -> AblationResult:
    """Ablate latent sets from the models' residuals and measure the next-token change (see the
    module docstring).

    latents: indices, a set spec for `parse_latent_set`, or a dict {name: either}. baselines:
    'random-matched' adds, for each given set, '<name> random-matched' (same size, same
    frequency buckets). frequency_top: percentages K adding 'top-K%-frequency' sets (figure 2b).
    ablate_in: models to ablate (names or indices; default all). The models run in eval mode
    under no_grad; every hook is removed before this returns or raises."""
    models = resolve_models(crosscoder, models)
    point = resolve_hook(crosscoder, hook)
    for t in models:
        t.check_hook(point)
    texts = _check_texts(texts)
    if max_length < 3:
        raise DistillscopeError(f"max_length must be at least 3 (BOS, a token and its successor), not {max_length}.",
                                "e.g. 64")
    sets = _as_sets(latents, crosscoder)
    unknown = [b for b in baselines if b != "random-matched"]
    if unknown:
        raise CrosscoderError(f"Unknown baseline {unknown[0]!r}.", "Use 'random-matched', or none.")
    for k in frequency_top:
        if not 0 < float(k) <= 100:
            raise CrosscoderError(f"A frequency percentage must lie in (0, 100], not {k}.", "e.g. 1, 5, 20")
    which = list(range(len(models))) if ablate_in is None else sorted({crosscoder.model_index(m) for m in ablate_in})
    if not which:
        raise CrosscoderError("No model to ablate.", "Name the base model, the variant, or both.")
    token_lists = tokenize_shared(models, texts, max_length)

    frequency = None
    if baselines or frequency_top:
        frequency = firing_frequency(crosscoder, models, token_lists, point, batch_size, state)
        for name in list(sets):
            if "random-matched" in baselines:
                sets[f"{name} random-matched"] = random_matched_set(sets[name], frequency, seed=seed)
        for k in frequency_top:
            sets[f"top-{float(k):g}%-frequency"] = top_frequency_set(frequency, float(k))

    names = crosscoder.model_names
    directions = {m: crosscoder.decoder_directions(m) for m in which}  # [F, D] per model, its units
    per_token = {s: {names[m]: {met: [] for met in METRICS} for m in which} for s in sets}
    token_document = []
    batches = list(_batches(len(token_lists), batch_size))
    for bi, rows in enumerate(batches):
        if state is not None:
            state.check_cancelled()
            state.report(bi, len(batches), "Ablating")
        ids, mask, keep = _masks(models[0], [token_lists[r] for r in rows])
        _, f = paired_latents(crosscoder, models, point, ids, mask, state)
        scored = keep.clone()
        scored[:, :-1] &= mask[:, 1:].bool()
        scored[:, -1] = False
        b_idx, _ = scored.nonzero(as_tuple=True)
        token_document.append(np.asarray([rows[b] for b in b_idx.tolist()], dtype=np.int64))
        k = keep.to(f.device)[..., None].to(f.dtype)
        for m in which:
            teacher = models[m]
            clean = _logits(teacher, ids, mask)
            for s, idx in sets.items():
                if state is not None:
                    state.check_cancelled()
                delta = -latent_contribution(f, directions[m].to(f.device), idx.to(f.device)) * k
                with residual_edit(teacher, point.layer, delta):
                    ablated = _logits(teacher, ids, mask)
                for met, v in next_token_metrics(clean, ablated, ids, scored).items():
                    per_token[s][names[m]][met].append(v.numpy())
                del ablated
            del clean
    if state is not None:
        state.report(len(batches), len(batches), "Ablation done")
    per_token_np = {s: {m: {met: np.concatenate(v) if v else np.zeros(0) for met, v in d.items()}
                        for m, d in per_model.items()} for s, per_model in per_token.items()}
    notes = {"tokens": "scored: every token but BOS and the last of each document (it has no next token)",
             "ablation": "latent j's decoded contribution f_j * W_dec[j, m] removed from model m's "
                         f"residual at {point.name}, all tokens but BOS"}
    return AblationResult(sets={s: [int(i) for i in idx.tolist()] for s, idx in sets.items()},
                          model_names=names, ablated_models=[names[m] for m in which],
                          per_token=per_token_np,
                          token_document=np.concatenate(token_document) if token_document else np.zeros(0, np.int64),
                          n_documents=len(texts), hook=point.name,
                          frequency=None if frequency is None else frequency.numpy(), notes=notes)


__all__ = ["METRICS", "METRIC_HELP", "SEED_FREQUENCY_TOP", "AblationResult", "ablate", "firing_frequency",
           "frequency_buckets", "next_token_metrics", "paired_latents", "parse_latent_set", "random_matched_set",
           "residual_edit", "resolve_hook", "resolve_models", "tokenize_shared", "top_frequency_set"]
