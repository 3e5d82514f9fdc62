"""Feature dashboards from an activation cache: one pass over the cached tokens, then every click
is a lookup (the teacher is never re-run for a dashboard).

`FeatureIndex.build` encodes each cached token once (see core.features.sparse) and keeps, per
feature: how often it fires, its max and sum, its `top_k` activating cache rows, and a histogram
of its nonzero activations. A context window around a top row, and the features of a token id
(search by token), are read back from the cache on demand and encoded exactly (float32). BOS
rows, when a cache holds them, are left out: their residual norm dwarfs every other token's.

Histogram bins are log-spaced, `bins` of them covering HIST_DECADES decades below each feature's
max, so the heavy tail of small activations and the rare large ones both show. The top edge is
the feature's max rounded up to a whole bin (edges sit on a fixed grid of 10**(step * i)), which
lets the histogram be kept while streaming: when a later chunk raises the max, counts move down
by whole bins, exactly. Bin 0 also counts everything smaller than its lower edge.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import torch

from core import paths
from core.errors import CacheError, DistillscopeError
from core.features.effects import logit_effects, nearest_features  # noqa: F401  (part of this API)
from core.features.scoring import encode_tokens
from core.features.sparse import PRECISIONS, SparseEncoder, pick_precision
from core.paths import atomic_write_bytes, atomic_write_text
from core.progress import TaskState

INDEX_FORMAT = "distillscope-feature-index/1"
TENSORS_FILENAME = "index.safetensors"
META_FILENAME = "index.json"
HIST_DECADES = 4.0
TOKEN_SAMPLE = 2048  # occurrences of a token encoded at most, for search by token
CHUNK_ENTRIES = 2 ** 24  # rows per encoded chunk = this / d_sae: bounds the [rows, d_sae] temporary
MIN_CHUNK_ROWS = 256
ACC_SLICE = 16384  # triplets per accumulator step (see _Accumulator.add)
_NO_EXP = -(2 ** 40)  # histogram exponent of a feature that has not fired yet


@dataclass
class Context:
    """A window of cached tokens around one activating token, for a dashboard."""

    doc_id: str
    doc_index: int  # the document's index in the cache
    position: int  # the activating token's position in its document (BOS = 0)
    value: float  # the feature's activation on it (recomputed exactly)
    token_ids: list[int]  # the window's token ids
    acts: list[float]  # the feature's activation on each token of the window
    center: int  # index of the activating token in token_ids


class TokenHit(NamedTuple):
    """A feature that fires on a token (FeatureIndex.features_for_token)."""

    feature: int
    score: float  # sqrt(fire_rate * share): how specific the feature is to the token
    mean: float  # mean activation over the token's occurrences (zeros included)
    fire_rate: float  # fraction of the token's occurrences on which it fires
    share: float  # fraction of the feature's whole activation on the cache that is on this token


class FeatureIndex:
    """Dashboard data of one dictionary over one token cache. Build with `build` (or `index_for`,
    which keeps built indexes on disk); `attach` an SAE and a cache to read contexts."""

    def __init__(self, tensors: dict[str, torch.Tensor], meta: dict):
        self.t = tensors
        self.meta = meta
        self.sae = None
        self.cache = None
        self._token_memo: dict[int, list[TokenHit]] = {}

    # -- what a dashboard reads -------------------------------------------------------------------

    @property
    def d_sae(self) -> int:
        return int(self.meta["d_sae"])

    @property
    def n_tokens(self) -> int:
        """Cached tokens indexed (BOS rows left out)."""
        return int(self.meta["n_tokens"])

    @property
    def n_rows(self) -> int:
        """Rows of the cache (row numbers in top_rows and contexts refer to these)."""
        return int(self.meta["n_rows"])

    @property
    def count(self) -> torch.Tensor:
        """[d_sae] int64: cached tokens on which each feature fires (activation > 0)."""
        return self.t["count"]

    @property
    def frequency(self) -> torch.Tensor:
        """[d_sae] float32: fraction of cached tokens on which each feature fires."""
        return (self.t["count"].double() / max(self.n_tokens, 1)).float()

    @property
    def max(self) -> torch.Tensor:
        """[d_sae] float32: largest activation of each feature (0 for a dead feature)."""
        return self.t["max"]

    @property
    def mean_active(self) -> torch.Tensor:
        """[d_sae] float32: mean activation over the tokens where each feature fires."""
        return (self.t["sum"] / self.t["count"].clamp(min=1)).float()

    def dead(self) -> torch.Tensor:
        """[d_sae] bool: features that never fire on the cache."""
        return self.t["count"] == 0

    def _check(self, f: int) -> int:
        f = int(f)
        if not 0 <= f < self.d_sae:
            raise IndexError(f"Feature {f} does not exist; the dictionary has 0 to {self.d_sae - 1}.")
        return f

    def histogram(self, f: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(edges [bins + 1] float64, counts [bins] int64) of the feature's nonzero activations,
        log-spaced (see the module docstring); two empty tensors for a dead feature."""
        f = self._check(f)
        if int(self.t["count"][f]) == 0:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
        bins, step = int(self.meta["bins"]), float(self.meta["hist_step"])
        e = int(self.t["hist_exp"][f])
        edges = torch.pow(10.0, (torch.arange(bins + 1, dtype=torch.float64) + e - bins) * step)
        return edges, self.t["hist"][f].long().clone()

    def top_rows(self, f: int) -> list[tuple[int, float]]:
        """The feature's top activating cache rows, (row, value), largest first."""
        f = self._check(f)
        rows, vals = self.t["top_rows"][f], self.t["top_vals"][f]
        return [(int(r), float(v)) for r, v in zip(rows, vals) if r >= 0]

    def token_id(self, row: int) -> int:
        return int(self.t["row_token"][row])

    def token_occurrences(self, token_id: int) -> int:
        """How often the token id occurs in the cache."""
        return int((self.t["row_token"] == int(token_id)).sum())

    def features_for_token(self, token_id: int, n: int = 10) -> list["TokenHit"]:
        """Features that fire on a token id, most specific to it first; only features that fire
        on it. Empty if the token is not in the cache.

        Ranked by score = sqrt(fire_rate * share), where fire_rate is the fraction of the token's
        occurrences on which the feature fires and share the fraction of the feature's whole
        activation (over the cache) spent on this token. A dense feature that fires everywhere has
        a small share; one that fires on the token only now and then has a small fire rate; a
        feature *for* the token has both near 1. (Ranking by mean activation alone put the
        densest, largest features first for every token.)

        Computed on demand (then remembered) rather than while building: keeping a sum for
        every (token, feature) pair seen cost a sort of all the cache's activations, more
        than the rest of the build, for a search a user makes now and then. Here it is one
        exact (float32) encoding of the token's rows, at most TOKEN_SAMPLE of them, spread
        evenly over the cache (the rates of a very common token are then estimates)."""
        key = int(token_id)
        if key not in self._token_memo:
            rows = (self.t["row_token"] == key).nonzero().flatten()
            if len(rows) == 0:
                self._token_memo[key] = []
            else:
                self._need_sources("Search by token")
                occurrences = len(rows)
                if len(rows) > TOKEN_SAMPLE:
                    rows = rows[torch.linspace(0, len(rows) - 1, TOKEN_SAMPLE).round().long()]
                acts = encode_tokens(self.sae, torch.cat(self._read_rows([(int(r), int(r)) for r in rows])))
                mean = acts.mean(0)
                fire_rate = (acts > 0).float().mean(0)
                total = self.t["sum"].double().clamp(min=1e-12)
                share = (mean.double() * occurrences / total).clamp(max=1.0).float()
                score = (fire_rate * share).sqrt()
                order = torch.sort(-score, stable=True).indices
                order = order[mean[order] > 0]
                self._token_memo[key] = [TokenHit(int(f), float(score[f]), float(mean[f]),
                                                  float(fire_rate[f]), float(share[f])) for f in order]
        return self._token_memo[key][:max(int(n), 0)]

    def _need_sources(self, what: str) -> None:
        if self.sae is None or self.cache is None:
            raise DistillscopeError(f"{what} needs the dictionary and the activation cache.",
                                    "Call attach(sae, cache) or open the index with index_for.")

    # -- contexts, read back from the cache ---------------------------------------------------

    def attach(self, sae=None, cache=None) -> "FeatureIndex":
        """Give the SAE and the cache that contexts are re-encoded from."""
        if sae is not None:
            if sae.d_sae != self.d_sae or sae.d_in != int(self.meta["d_in"]):
                raise DistillscopeError("This feature index was built for another dictionary "
                                        f"(d_sae {self.d_sae}, d_in {self.meta['d_in']}).",
                                        "Build the index for this dictionary.")
            self.sae = sae
        if cache is not None:
            if int(cache.manifest["n_rows"]) != self.n_rows:
                raise DistillscopeError(f"The cache in '{cache.folder}' is not the one this index "
                                        "was built from.", "Build the index for this cache.")
            # Extraction flushes shards by time as well as by size, so a cache extracted again
            # holds the same rows in other shards; the index's row spans would read the wrong ones.
            starts = torch.tensor([0] + [int(s["rows"]) for s in cache.manifest["shards"]]).cumsum(0)
            if not torch.equal(starts, self.t["shard_starts"].long()):
                raise DistillscopeError(f"The cache in '{cache.folder}' was extracted again since this "
                                        "index was built (its shards differ).", "Build the index for this cache.")
            self.cache = cache
        return self

    def contexts(self, f: int, width: int = 12, n: Optional[int] = None) -> list[Context]:
        """The windows of up to `width` tokens either side of the feature's top rows (within
        the same document), with the feature's activation on every token of each window."""
        f = self._check(f)
        self._need_sources("Contexts")
        top = self.top_rows(f)
        top = top if n is None else top[:max(int(n), 0)]
        if not top:
            return []
        row_doc = self.t["row_doc"]
        windows = []
        for row, _ in top:
            lo, hi = max(row - width, 0), min(row + width, self.n_rows - 1)
            same = (row_doc[lo:hi + 1] == row_doc[row]).nonzero().flatten() + lo
            # A document's rows are contiguous, so its rows in [lo, hi] are one run.
            windows.append((row, int(same.min()), int(same.max())))
        acts = self._read_rows([(lo, hi) for _, lo, hi in windows])
        sizes = [hi - lo + 1 for _, lo, hi in windows]
        values = encode_tokens(self.sae, torch.cat(acts))[:, f].tolist()
        out, at = [], 0
        for (row, lo, hi), size in zip(windows, sizes):
            window_vals = values[at:at + size]
            at += size
            doc = int(row_doc[row])
            out.append(Context(
                doc_id=str(self.cache.document_ids[doc]), doc_index=doc,
                position=int(self.t["row_pos"][row]), value=window_vals[row - lo],
                token_ids=[int(t) for t in self.t["row_token"][lo:hi + 1]],
                acts=window_vals, center=row - lo))
        return out

    def _read_rows(self, spans: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Activations of cache rows lo..hi for each span (each within one shard: shards hold
        whole documents), reading only those rows."""
        from safetensors import safe_open

        starts = self.t["shard_starts"]
        shards = self.cache.manifest["shards"]
        out: list[Optional[torch.Tensor]] = [None] * len(spans)
        by_shard: dict[int, list[int]] = {}
        for i, (lo, _) in enumerate(spans):
            by_shard.setdefault(int(torch.searchsorted(starts, torch.tensor([lo]), right=True)) - 1, []).append(i)
        for s, items in by_shard.items():
            path = self.cache.folder / shards[s]["file"]
            try:
                with safe_open(str(path), "pt") as data:
                    acts = data.get_slice("acts")
                    for i in items:
                        lo, hi = spans[i]
                        base = int(starts[s])
                        out[i] = acts[lo - base:hi - base + 1].float()
            except Exception as exc:
                raise CacheError(f"Shard '{path}' cannot be read ({exc}).",
                                 "The cache was damaged; delete the folder and extract again.")
        return out

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def build(cls, sae, cache, top_k: int = 20, bins: int = 40, state: Optional[TaskState] = None,
              precision: Optional[str] = None) -> "FeatureIndex":
        """Encode every token of a token cache once and gather the dashboard data. `precision`:
        'float32' (exact), 'bfloat16' (about 4x faster where the CPU has bfloat16 units), or None
        to pick the faster (see core.features.sparse)."""
        state = state or TaskState()
        t0 = time.monotonic()
        _check_pair(sae, cache)
        precision = precision or pick_precision(sae.W_enc.device.type)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        encoder = SparseEncoder(sae, precision)
        F, n_rows = sae.d_sae, int(cache.manifest["n_rows"])
        acc = _Accumulator(F, top_k, bins, n_rows)
        chunk = max(MIN_CHUNK_ROWS, CHUNK_ENTRIES // F)
        bos = (cache.manifest.get("tokenizer") or {}).get("bos_id")
        row0, n_bos = 0, 0
        state.report(0, n_rows, "Indexing features")
        for data in cache.shards():
            acc.add_rows(data, row0)
            acts = data["acts"]
            is_bos = data["token_id"] == bos if bos is not None else None
            n_bos += int(is_bos.sum()) if is_bos is not None else 0
            for start in range(0, acts.shape[0], chunk):
                state.check_cancelled()
                rows, feats, vals = encoder(acts[start:start + chunk])
                if is_bos is not None and bool(is_bos[start:start + chunk].any()):
                    keep = ~is_bos[start:start + chunk][rows]
                    rows, feats, vals = rows[keep], feats[keep], vals[keep]
                acc.add(rows + (row0 + start), feats, vals)
                done = row0 + min(start + chunk, acts.shape[0])
                state.report(done, n_rows, f"Indexing features: {done:,}/{n_rows:,} tokens")
            row0 += acts.shape[0]
        if row0 != n_rows:
            raise CacheError(f"The cache in '{cache.folder}' lists {n_rows:,} rows but its shards "
                             f"hold {row0:,}.", "The cache was damaged; delete it and extract again.")
        tensors = acc.finish()
        meta = {
            "format": INDEX_FORMAT, "n_rows": n_rows, "n_tokens": n_rows - n_bos, "d_sae": F, "d_in": sae.d_in,
            "top_k": top_k, "bins": bins, "hist_step": HIST_DECADES / bins,
            "hist_decades": HIST_DECADES, "precision": precision,
            "hook": cache.manifest["hook"], "cache_folder": str(cache.folder),
            "n_documents": len(cache.document_ids), "build_seconds": round(time.monotonic() - t0, 3),
        }
        index = cls(tensors, meta)
        index.attach(sae, cache)
        return index

    # -- save / load ------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """`index.safetensors` (tensors, and the metadata in its header) written atomically, so
        a kill leaves the old index or the new one; `index.json` beside it is a readable copy of
        the metadata."""
        from safetensors.torch import save

        folder = Path(folder)
        blob = save({k: v.contiguous() for k, v in self.t.items()}, metadata={"meta": json.dumps(self.meta)})
        atomic_write_bytes(folder / TENSORS_FILENAME, blob)
        atomic_write_text(folder / META_FILENAME, json.dumps(self.meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path, sae=None, cache=None) -> "FeatureIndex":
        """Read a saved index; `sae` and `cache` are attached if given (see `attach`)."""
        from safetensors import safe_open

        path = Path(folder) / TENSORS_FILENAME
        if not path.is_file():
            raise DistillscopeError(f"'{folder}' holds no feature index.", "Build it again.")
        try:
            with safe_open(str(path), "pt") as data:
                meta = json.loads((data.metadata() or {})["meta"])
                tensors = {k: data.get_tensor(k) for k in data.keys()}
            if meta.get("format") != INDEX_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
        except Exception as exc:  # header, JSON and missing-key errors alike mean: damaged
            raise DistillscopeError(f"The feature index in '{folder}' is damaged or of another "
                                    f"version ({exc.__class__.__name__}: {exc}).", "Delete it and build it again.")
        missing = [k for k in _TENSOR_NAMES if k not in tensors]
        if missing:
            raise DistillscopeError(f"The feature index in '{folder}' lacks {', '.join(missing)}.",
                                    "Delete it and build it again.")
        return cls(tensors, meta).attach(sae, cache)


_TENSOR_NAMES = ("count", "sum", "max", "hist", "hist_exp", "top_vals", "top_rows", "row_doc",
                 "row_pos", "row_token", "shard_starts")


def _check_pair(sae, cache) -> None:
    m = cache.manifest
    if cache.mode != "tokens":
        raise CacheError(f"The cache in '{cache.folder}' holds one vector per document; feature "
                         "dashboards need every token.", "Extract with mode 'tokens'.")
    if int(m["d_model"]) != sae.d_in:
        raise DistillscopeError(f"The cache holds vectors of width {m['d_model']}, the dictionary "
                                f"reads width {sae.d_in}.", "Use a cache of the dictionary's model.")
    hook = getattr(sae.cfg, "hook_name", "") or ""
    if hook and hook != m["hook"]:
        raise DistillscopeError(f"The cache was extracted at {m['hook']}, the dictionary reads at {hook}.",
                                f"Extract a token cache at {hook}.")


class _Accumulator:
    """Running per-feature statistics from (row, feature, value) triplets, chunk by chunk."""

    def __init__(self, F: int, top_k: int, bins: int, n_rows: int):
        self.F, self.k, self.bins = F, int(top_k), int(bins)
        self.step = HIST_DECADES / bins
        self.count = torch.zeros(F, dtype=torch.long)
        self.sum = torch.zeros(F, dtype=torch.float64)
        self.max = torch.zeros(F, dtype=torch.float32)
        self.hist = torch.zeros(F, bins, dtype=torch.long)
        self.hist_exp = torch.full((F,), _NO_EXP, dtype=torch.long)
        self.top_vals = torch.full((F, self.k), -float("inf"))
        self.top_rows = torch.full((F, self.k), -1, dtype=torch.long)
        self.kth = torch.full((F,), -float("inf"))  # k-th best value per feature at the last merge
        self.candidates: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.n_candidates = 0
        self.row_doc = torch.zeros(n_rows, dtype=torch.int32)
        self.row_pos = torch.zeros(n_rows, dtype=torch.int32)
        self.row_token = torch.zeros(n_rows, dtype=torch.int64)
        self.shard_starts = [0]

    def add_rows(self, data: dict, row0: int) -> None:
        n = data["acts"].shape[0]
        if row0 + n > len(self.row_doc):
            raise CacheError("The cache's shards hold more rows than its manifest lists.",
                             "The cache was damaged; delete it and extract again.")
        self.row_doc[row0:row0 + n] = data["doc_index"].to(torch.int32)
        self.row_pos[row0:row0 + n] = data["position"].to(torch.int32)
        self.row_token[row0:row0 + n] = data["token_id"].long()
        self.shard_starts.append(row0 + n)

    def add(self, rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor) -> None:
        # In slices below torch's parallel grain (32768 elements), so each small op runs on one
        # thread: measured on a 2-core machine busy with other work, an op split over two
        # threads waited for the second core (about 8 s instead of 0.3 s for 100,000 tokens),
        # and these ops are too small to gain from a second thread anyway.
        for start in range(0, vals.numel(), ACC_SLICE):
            end = start + ACC_SLICE
            self._add(rows[start:end], feats[start:end], vals[start:end])

    def _add(self, rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor) -> None:
        if vals.numel() == 0:
            return
        fired_before = self.count > 0
        self.count += torch.bincount(feats, minlength=self.F)
        self.sum.index_add_(0, feats, vals.double())
        self.max.scatter_reduce_(0, feats, vals, "amax")
        self._histogram(feats, vals, fired_before)
        # Top rows: only entries above the feature's k-th best (as of the last merge; it only
        # grows, so a stale one lets more through, never fewer) are kept for the next merge.
        keep = vals > self.kth[feats]
        if not bool(keep.all()):
            rows, feats, vals = rows[keep], feats[keep], vals[keep]
        self.candidates.append((rows, feats, vals))
        self.n_candidates += len(vals)
        if self.n_candidates > 4 * self.F * self.k:
            self._merge_top()

    def _histogram(self, feats: torch.Tensor, vals: torch.Tensor, fired_before: torch.Tensor) -> None:
        B = self.bins
        level = torch.floor(torch.log10(vals) / self.step).long()  # bin on the global grid
        new_exp = self.hist_exp.scatter_reduce(0, feats, level + 1, "amax")
        moved = (new_exp > self.hist_exp) & fired_before
        if bool(moved.any()):  # a feature's max grew: its bins slide down by whole bins
            f = moved.nonzero().flatten()
            shift = (new_exp[f] - self.hist_exp[f]).clamp(max=B)
            old = self.hist[f]
            padded = torch.cat([old, torch.zeros_like(old)], dim=1)
            new = padded.gather(1, torch.arange(B)[None, :] + shift[:, None])
            new[:, 0] = old.cumsum(1).gather(1, shift.clamp(max=B - 1)[:, None]).squeeze(1)
            self.hist[f] = new
        self.hist_exp = new_exp
        j = (level - (new_exp[feats] - B)).clamp_(min=0)
        self.hist.view(-1).index_add_(0, feats * B + j, torch.ones_like(j))

    def _merge_top(self) -> None:
        """Fold the candidates into each feature's top-k list with one sort: by feature, then
        by value, largest first; ties keep the earlier row (kept entries and candidates are
        both in row order, and the sort is stable)."""
        have = self.top_rows >= 0
        F_idx = torch.arange(self.F)[:, None].expand_as(self.top_rows)
        parts = [(self.top_rows[have], F_idx[have], self.top_vals[have])] + self.candidates
        rows = torch.cat([p[0] for p in parts])
        feats = torch.cat([p[1] for p in parts])
        vals = torch.cat([p[2] for p in parts]).float()
        self.candidates, self.n_candidates = [], 0
        # Positive float32 values order like their bit patterns: one int64 key sorts by
        # (feature ascending, value descending).
        bits = vals.view(torch.int32).long()
        order = torch.sort(feats * 2 ** 31 + (2 ** 31 - 1 - bits), stable=True).indices
        rows, feats, vals = rows[order], feats[order], vals[order]
        first = torch.zeros(self.F + 1, dtype=torch.long)
        first[1:] = torch.bincount(feats, minlength=self.F).cumsum(0)
        rank = torch.arange(len(feats)) - first[feats]
        ok = rank < self.k
        self.top_vals.fill_(-float("inf"))
        self.top_rows.fill_(-1)
        self.top_vals[feats[ok], rank[ok]] = vals[ok]
        self.top_rows[feats[ok], rank[ok]] = rows[ok]
        self.kth = self.top_vals[:, -1].clone()

    def finish(self) -> dict[str, torch.Tensor]:
        self._merge_top()
        top_vals = torch.where(self.top_rows >= 0, self.top_vals, torch.zeros(()))
        return {
            "count": self.count, "sum": self.sum, "max": self.max, "hist": self.hist,
            "hist_exp": self.hist_exp, "top_vals": top_vals.float(), "top_rows": self.top_rows,
            "row_doc": self.row_doc, "row_pos": self.row_pos, "row_token": self.row_token,
            "shard_starts": torch.tensor(self.shard_starts, dtype=torch.long),
        }


# ---------------------------------------------------------------------------------------------
# Built indexes kept in the user cache dir


def sae_fingerprint(sae) -> str:
    """Hash of the dictionary's config and every saved tensor: any retraining changes it."""
    h = hashlib.sha256(json.dumps(sae.cfg.to_dict(), sort_keys=True, default=str).encode())
    for name in sorted(sae.expected_shapes()):
        tensor = getattr(sae, name).detach().cpu().contiguous()
        h.update(name.encode() + str(tensor.dtype).encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()[:24]


def index_for(sae_folder_or_sae, cache, state: Optional[TaskState] = None, top_k: int = 20,
              bins: int = 40, precision: Optional[str] = None) -> FeatureIndex:
    """The index of this dictionary over this cache, built once and then loaded from
    cache_dir()/feature-index/<hash of the SAE's weights and the cache's manifest key>."""
    from core.dictionaries import load

    sae = load(sae_folder_or_sae) if isinstance(sae_folder_or_sae, (str, Path)) else sae_folder_or_sae
    _check_pair(sae, cache)
    precision = precision or pick_precision(sae.W_enc.device.type)
    key = json.dumps([INDEX_FORMAT, sae_fingerprint(sae), cache.manifest["key"], cache.manifest["n_rows"],
                      top_k, bins, precision], sort_keys=True, default=str)
    folder = paths.cache_dir() / "feature-index" / hashlib.sha256(key.encode()).hexdigest()[:24]
    if (folder / TENSORS_FILENAME).is_file():
        try:
            return FeatureIndex.load(folder, sae, cache)
        except DistillscopeError:
            pass  # damaged or half-written: build it again below
    index = FeatureIndex.build(sae, cache, top_k=top_k, bins=bins, state=state, precision=precision)
    index.save(folder)
    return index
