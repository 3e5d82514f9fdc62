"""A crosscoder latent's dashboard (issue 6): what latent j of a base/variant crosscoder does on a
corpus and downstream in each model.

    corpus = encode_corpus(crosscoder, [base, variant], texts)        # both models, once
    dash = latent_dashboard(crosscoder, 17, [base, variant], corpus)   # then any latent, instantly
    dash.contexts[0].tokens, dash.contexts[0].acts                     # top context, per-token acts
    dash.effects["variant"]["promoted"]                                # [(token, logit), ...]

`encode_corpus` runs both models (`Teacher` objects in `crosscoder.cfg.model_names` order, sharing
a tokenizer) as far as the crosscoder's hook (`core.models.capture` stops after block L), encodes
the paired residuals of every token, and keeps the nonzero latent activations (sparse, so one
pass serves the dashboard of every latent). BOS and padding are left out everywhere, as in
`core.crosscoder.ablation`: the BOS residual is huge and constant and says nothing about text.

A `LatentDashboard` holds, for one latent:

    relative_norm, cosine, latent_class   from the decoders (core.crosscoder.analysis)
    decoder_norms                         ||W_dec[j, m]|| per model (normalized space)
    frequency, count, n_tokens            tokens of the corpus (non-BOS) on which it fires
    mean_activation                       mean over all those tokens (zeros included)
    mean_active, max                      over the tokens where it fires
    hist_edges, hist_counts               its activations where it fires, linear bins 0..max
    contexts                              the top-N tokens by activation, each with a window of
                                          `width` tokens either side in its document (BOS left
                                          out) and the latent's activation on every token
    effects                               per model: the decoder row of that model (its own
                                          units) through its final norm and unembedding, the
                                          tokens it promotes and suppresses most, as
                                          core.features.effects.logit_effects does for SAE
                                          features; a model whose decoder row is under 2% of
                                          the other's (almost zero) gets a note instead, one
                                          under 1/9 of it (the exclusive cut) a note beside them

Qt-free, like all of core/. Cancellable through `core.progress.TaskState`.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from core.crosscoder.ablation import (_batches, _check_texts, _masks, paired_latents, resolve_hook, resolve_models,
                                      tokenize_shared)
from core.crosscoder.analysis import _dead, classify, decoder_cosines, decoder_norms, relative_norms
from core.crosscoder.model import Crosscoder, CrosscoderError
from core.errors import DistillscopeError
from core.models import HookPoint
from core.progress import TaskState

N_CONTEXTS = 20
WIDTH = 10  # tokens either side of the activating one
N_EFFECTS = 10
HIST_BINS = 30
ZERO_DECODER = 0.02  # a model's decoder row below this fraction of the other's writes (almost) nothing:
# its direction is what is left of a random start, and its logit effects would be noise
SMALL_DECODER = 1 / 9  # below this (the exclusive-class cut: rel > 0.9), effects come with a note


# ---------------------------------------------------------------------------------------------
# The corpus, encoded once


@dataclass
class CorpusLatents:
    """Every nonzero latent activation of a crosscoder on a corpus (sparse, COO).

    Token positions are flat over the documents: document d holds positions
    starts[d] .. starts[d + 1] - 1, its tokens token_ids[d] (BOS included, as the models read
    them). rows / latents / values [nnz]: flat position, latent index and activation of each
    nonzero entry; BOS and padding hold none. counted [n_flat]: the positions that count
    (every real token but BOS). Statistics per latent over the counted tokens: count, total
    (sum of activations) and peak (largest activation), each [F]."""

    doc_ids: list[str]
    token_ids: list[list[int]]
    starts: np.ndarray
    rows: np.ndarray
    latents: np.ndarray
    values: np.ndarray
    counted: np.ndarray
    d_latent: int
    hook: str
    settings: dict = field(default_factory=dict)
    count: np.ndarray = field(init=False)
    total: np.ndarray = field(init=False)
    peak: np.ndarray = field(init=False)

    def __post_init__(self):
        F = self.d_latent
        self.count = np.bincount(self.latents, minlength=F).astype(np.int64)
        self.total = np.bincount(self.latents, weights=self.values.astype(np.float64), minlength=F)
        self.peak = np.zeros(F, dtype=np.float64)
        if self.values.size:
            np.maximum.at(self.peak, self.latents, self.values.astype(np.float64))

    @property
    def n_documents(self) -> int:
        return len(self.doc_ids)

    @property
    def n_flat(self) -> int:
        return int(self.starts[-1])

    @property
    def n_tokens(self) -> int:
        """Tokens that count (real tokens but BOS)."""
        return int(self.counted.sum())

    def frequency(self) -> np.ndarray:
        """Fraction of the counted tokens on which each latent fires [F]."""
        return self.count / max(self.n_tokens, 1)

    def activations(self, latent: int) -> np.ndarray:
        """Latent `latent`'s activation on every flat position [n_flat] (zero where it is silent,
        on BOS and padding)."""
        j = _check_latent(latent, self.d_latent)
        out = np.zeros(self.n_flat, dtype=np.float32)
        sel = self.latents == j
        out[self.rows[sel]] = self.values[sel]
        return out

    def document_of(self, position: int) -> tuple[int, int]:
        """(document index, position inside it) of a flat position."""
        d = int(np.searchsorted(self.starts, position, side="right")) - 1
        return d, int(position - self.starts[d])

    def document_activations(self, latent: int, document: int) -> np.ndarray:
        """The latent's activation on each token of one document [len(token_ids[document])]."""
        a = self.activations(latent)
        return a[int(self.starts[document]):int(self.starts[document + 1])]


def _check_latent(latent, d_latent: int) -> int:
    if isinstance(latent, bool) or not isinstance(latent, (int, np.integer)):
        raise CrosscoderError(f"A latent is given by its index, not {latent!r}.", "e.g. 17")
    j = int(latent)
    if not 0 <= j < d_latent:
        raise CrosscoderError(f"Latent {j} does not exist; the crosscoder has latents 0 to {d_latent - 1}.",
                              "Pick a latent from the lists.")
    return j


@torch.no_grad()
def encode_corpus(crosscoder: Crosscoder, models, texts: Sequence[str], doc_ids: Optional[Sequence[str]] = None,
                  max_length: int = 64, batch_size: int = 8, hook: Union[str, HookPoint, None] = None,
                  state: Optional[TaskState] = None) -> CorpusLatents:
    """Run both models over `texts` to the crosscoder's hook and keep every nonzero latent
    activation (see the module docstring). `doc_ids` name the documents (default their index)."""
    models = resolve_models(crosscoder, models)
    point = resolve_hook(crosscoder, hook)
    for t in models:
        t.check_hook(point)
    texts = _check_texts(texts)
    ids_ = [str(i) for i in range(len(texts))] if doc_ids is None else [str(d) for d in doc_ids]
    if len(ids_) != len(texts):
        raise DistillscopeError(f"{len(ids_)} document ids for {len(texts)} texts.", "Give one id per text.")
    if max_length < 2:
        raise DistillscopeError(f"max_length must be at least 2 (BOS and a token), not {max_length}.", "e.g. 64")
    token_lists = tokenize_shared(models, texts, max_length)
    starts = np.zeros(len(token_lists) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([len(t) for t in token_lists])
    counted = np.zeros(int(starts[-1]), dtype=bool)
    rows, latents, values = [], [], []
    batches = list(_batches(len(token_lists), batch_size))
    for bi, batch in enumerate(batches):
        if state is not None:
            state.check_cancelled()
            state.report(bi, len(batches), "Reading the corpus through both models")
        ids, mask, keep = _masks(models[0], [token_lists[r] for r in batch])
        _, f = paired_latents(crosscoder, models, point, ids, mask, state)
        f = f.cpu()
        for i, r in enumerate(batch):
            n = len(token_lists[r])
            k = keep[i, :n]
            counted[starts[r]:starts[r] + n] = k.numpy()
            f_TF = f[i, :n] * k[:, None].to(f.dtype)
            t_idx, j_idx = f_TF.nonzero(as_tuple=True)
            rows.append((t_idx + int(starts[r])).numpy().astype(np.int64))
            latents.append(j_idx.numpy().astype(np.int64))
            values.append(f_TF[t_idx, j_idx].numpy().astype(np.float32))
    if state is not None:
        state.report(len(batches), len(batches), "Corpus read")

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    return CorpusLatents(doc_ids=ids_, token_ids=token_lists, starts=starts, rows=cat(rows, np.int64),
                         latents=cat(latents, np.int64), values=cat(values, np.float32), counted=counted,
                         d_latent=crosscoder.d_latent, hook=point.name,
                         settings={"max_length": max_length, "models": [t.name for t in models]})


@torch.no_grad()
def paired_token_batches(crosscoder: Crosscoder, models, texts: Sequence[str], max_length: int = 64,
                         batch_size: int = 8, hook: Union[str, HookPoint, None] = None,
                         state: Optional[TaskState] = None) -> Iterator[torch.Tensor]:
    """Paired residuals x [N, M, D] (each model's units) of the real non-BOS tokens of `texts`,
    a batch of documents at a time: the input `latent_scaling` takes."""
    models = resolve_models(crosscoder, models)
    point = resolve_hook(crosscoder, hook)
    for t in models:
        t.check_hook(point)
    texts = _check_texts(texts)
    token_lists = tokenize_shared(models, texts, max_length)
    batches = list(_batches(len(token_lists), batch_size))
    for bi, batch in enumerate(batches):
        if state is not None:
            state.check_cancelled()
            state.report(bi, len(batches), "Paired activations")
        ids, mask, keep = _masks(models[0], [token_lists[r] for r in batch])
        x, _ = paired_latents(crosscoder, models, point, ids, mask, state)
        yield x[keep.to(x.device)]


# ---------------------------------------------------------------------------------------------
# One latent


@dataclass
class LatentContext:
    """A window of tokens around one activating token. acts: the latent on every token of the
    window; center: the activating token's place in the window."""

    doc_index: int
    doc_id: str
    position: int  # the activating token's position in its document (BOS is 0)
    value: float
    token_ids: list[int]
    tokens: list[str]
    acts: list[float]
    center: int


@dataclass
class LatentDashboard:
    """Everything a dashboard shows about one latent (see the module docstring); plain data."""

    latent: int
    d_latent: int
    model_names: list[str]
    hook: str
    latent_class: str
    relative_norm: Optional[float]
    cosine: float
    decoder_norms: list[float]
    n_tokens: int
    count: int
    frequency: float
    mean_activation: float
    mean_active: float
    max: float
    hist_edges: list[float] = field(default_factory=list)
    hist_counts: list[int] = field(default_factory=list)
    contexts: list[LatentContext] = field(default_factory=list)
    effects: dict[str, dict] = field(default_factory=dict)
    n_documents: int = 0

    def to_json(self) -> dict:
        def num(x):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x

        return {
            "latent": self.latent, "d_latent": self.d_latent, "model_names": self.model_names, "hook": self.hook,
            "class": self.latent_class, "relative_norm": num(self.relative_norm), "cosine": num(self.cosine),
            "decoder_norms": dict(zip(self.model_names, self.decoder_norms)),
            "n_tokens": self.n_tokens, "n_documents": self.n_documents, "count": self.count,
            "frequency": self.frequency, "mean_activation": self.mean_activation,
            "mean_active": self.mean_active, "max": self.max,
            "histogram": {"edges": self.hist_edges, "counts": self.hist_counts},
            "contexts": [vars(c).copy() for c in self.contexts],
            "effects": {m: {"promoted": [list(p) for p in e["promoted"]],
                            "suppressed": [list(p) for p in e["suppressed"]], "note": e["note"]}
                        for m, e in self.effects.items()},
        }


def decoder_logit_effects(teacher, vector: torch.Tensor, n: int = N_EFFECTS):
    """(promoted, suppressed) of one residual-space vector through `teacher`'s final norm and
    unembedding: `core.features.effects.logit_effects` on a one-row dictionary."""
    from core.features.effects import logit_effects

    v = torch.as_tensor(vector).detach().float().reshape(1, -1)
    one_row = types.SimpleNamespace(W_dec=v, d_sae=1, d_in=v.shape[1])
    return logit_effects(teacher, one_row, 0, n)


def latent_dashboard(crosscoder: Crosscoder, latent: int, models, corpus: Optional[CorpusLatents] = None,
                     texts: Optional[Sequence[str]] = None, n_contexts: int = N_CONTEXTS, width: int = WIDTH,
                     n_effects: int = N_EFFECTS, frequency=None, max_length: int = 64, batch_size: int = 8,
                     state: Optional[TaskState] = None) -> LatentDashboard:
    """The dashboard of `latent` on `corpus` (from `encode_corpus`), or on `texts` (encoded
    here). `frequency` (per latent, e.g. report.json's held-out frequencies) only decides the
    class: latents that never fired there are 'dead'."""
    j = _check_latent(latent, crosscoder.d_latent)
    models = resolve_models(crosscoder, models)
    if corpus is None:
        if texts is None:
            raise DistillscopeError("A dashboard needs a corpus.", "Pass texts, or encode_corpus(...) of them.")
        corpus = encode_corpus(crosscoder, models, texts, max_length=max_length, batch_size=batch_size, state=state)
    if corpus.d_latent != crosscoder.d_latent:
        raise CrosscoderError(f"The encoded corpus has {corpus.d_latent} latents, the crosscoder {crosscoder.d_latent}.",
                              "Encode the corpus with this crosscoder.")
    if n_contexts < 0 or width < 0 or n_effects < 0:
        raise DistillscopeError("The numbers of contexts, window tokens and effects cannot be negative.", "")
    if state is not None:
        state.check_cancelled()
    rel = relative_norms(crosscoder)
    norms = decoder_norms(crosscoder)[j]
    latent_class = classify(rel[j:j + 1], _dead(crosscoder, frequency)[j:j + 1])[0]
    r = float(rel[j])

    acts = corpus.activations(j)
    n = corpus.n_tokens
    count = int(corpus.count[j])
    active = acts[acts > 0]
    peak = float(active.max()) if active.size else 0.0
    if active.size:
        counts, edges = np.histogram(active.astype(np.float64), bins=HIST_BINS, range=(0.0, peak))
    else:
        counts, edges = np.zeros(0, dtype=np.int64), np.zeros(0)

    contexts = []
    order = np.argsort(-acts, kind="stable")[:n_contexts]
    for p in order.tolist():
        value = float(acts[p])
        if value <= 0:
            break
        d, t = corpus.document_of(p)
        s0 = int(corpus.starts[d])
        doc_counted = np.nonzero(corpus.counted[s0:int(corpus.starts[d + 1])])[0]
        first = int(doc_counted[0]) if doc_counted.size else 0
        lo, hi = max(first, t - width), min(len(corpus.token_ids[d]) - 1, t + width)
        ids = corpus.token_ids[d][lo:hi + 1]
        contexts.append(LatentContext(doc_index=d, doc_id=corpus.doc_ids[d], position=t, value=value,
                                      token_ids=list(ids), tokens=models[0].token_strings(list(ids)),
                                      acts=[float(a) for a in acts[s0 + lo:s0 + hi + 1]], center=t - lo))

    effects = {}
    biggest = float(norms.max())
    for m, (name, teacher) in enumerate(zip(crosscoder.model_names, models)):
        if state is not None:
            state.check_cancelled()
        entry = {"promoted": [], "suppressed": [], "note": ""}
        if biggest <= 0 or float(norms[m]) <= ZERO_DECODER * biggest:
            entry["note"] = (f"The latent's {name} decoder is (almost) zero "
                             f"({float(norms[m]):.2g} against {biggest:.2g}): it writes nothing into {name}.")
        else:
            try:
                up, down = decoder_logit_effects(teacher, crosscoder.decoder_directions(m)[j], n_effects)
                entry["promoted"], entry["suppressed"] = up, down
                if float(norms[m]) < SMALL_DECODER * biggest:
                    entry["note"] = (f"Its {name} decoder is only {100 * float(norms[m]) / biggest:.2g}% of the "
                                     f"other's: it writes little into {name}.")
            except DistillscopeError as exc:
                entry["note"] = exc.what
        effects[name] = entry

    return LatentDashboard(
        latent=j, d_latent=crosscoder.d_latent, model_names=crosscoder.model_names, hook=corpus.hook,
        latent_class=latent_class, relative_norm=None if r != r else r,
        cosine=float(decoder_cosines(crosscoder)[j]), decoder_norms=[float(v) for v in norms],
        n_tokens=n, count=count, frequency=count / max(n, 1),
        mean_activation=float(corpus.total[j]) / max(n, 1),
        mean_active=float(corpus.total[j]) / count if count else 0.0, max=peak,
        hist_edges=[float(e) for e in edges], hist_counts=[int(c) for c in counts],
        contexts=contexts, effects=effects, n_documents=corpus.n_documents)


__all__ = ["HIST_BINS", "N_CONTEXTS", "N_EFFECTS", "WIDTH", "CorpusLatents", "LatentContext", "LatentDashboard",
           "decoder_logit_effects", "encode_corpus", "latent_dashboard", "paired_token_batches"]
