"""Activation extraction: a corpus through the teacher, streamed into a sharded on-disk cache.

A cache folder holds `manifest.json`, shards `shard-00000.safetensors`... and, once complete,
`stats.safetensors` (per-dimension mean and std for z-normalization). Shards always hold whole
documents, so an interrupted extraction resumes with the documents no finished shard holds.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from core.errors import CacheError
from core.models import HookPoint, Teacher, bfloat16_twin, capture
from core.paths import atomic_write_bytes, atomic_write_text
from core.progress import TaskState

CACHE_FORMAT = "distillscope-activations/1"
MODES = ("pooled", "tokens")
# exact: the teacher's own dtype; fast: bfloat16 weights on CPUs with AMX (models.bfloat16_twin,
# 3x the tokens/s of float32 here, activations within 0.4%), the teacher's own dtype elsewhere.
PRECISIONS = ("exact", "fast")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ExtractSettings:
    """How to extract. Every field is recorded in the cache manifest."""

    hook: str = "resid_post.6"  # hook point, KIND.LAYER: resid_post, mlp_in or mlp_out
    mode: str = "pooled"  # pooled: one mean vector per document (BOS excluded); tokens: every token
    max_length: int = 256  # tokens per document, BOS included; longer documents are truncated
    batch_tokens: int = 4096  # padded tokens per forward pass (a longer document runs alone)
    shard_mb: int = 64  # shard size on disk; also bounds the rows held in RAM
    dtype: str = "float32"  # stored dtype: float32, float16 or bfloat16
    include_bos: bool = False  # tokens mode: keep the BOS row (its norm dwarfs all others)
    flush_seconds: float = 15.0  # also close a shard after this long, so a cancel loses little
    precision: str = "exact"  # one of PRECISIONS

    def key(self, results_only: bool = True) -> dict:
        """The settings a cache is found and checked by; results_only leaves out those that
        change speed, not values. Exact precision is left out, so caches written before the
        field existed still match."""
        key = asdict(self)
        if key["precision"] == "exact":
            key.pop("precision")
        elif key["precision"] == "fast":  # bfloat16 weights; earlier 'fast' caches were autocast
            key["precision"] = "fast:bfloat16-weights"
        if results_only:
            for name in ("batch_tokens", "shard_mb", "flush_seconds"):
                key.pop(name)
        return key

    def validate(self) -> HookPoint:
        hook = HookPoint.parse(self.hook)
        if self.mode not in MODES:
            raise ValueError(f"Mode '{self.mode}' is unknown; use one of {', '.join(MODES)}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"Dtype '{self.dtype}' is unknown; use one of {', '.join(DTYPES)}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Precision '{self.precision}' is unknown; use one of {', '.join(PRECISIONS)}.")
        if not 2 <= self.max_length <= 1_000_000:
            raise ValueError("max_length must be between 2 and 1,000,000 tokens.")
        if self.batch_tokens < 1:
            raise ValueError("batch_tokens must be at least 1 (a longer document runs alone).")
        if self.shard_mb < 1:
            raise ValueError("shard_mb must be at least 1.")
        return hook


def corpus_hash(ids: Sequence[str], texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for doc_id, text in zip(ids, texts):
        h.update(doc_id.encode("utf-8", "replace") + b"\0" + text.encode("utf-8", "replace") + b"\1")
    return h.hexdigest()[:24]


def plan_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Group documents of similar length (longest first) so padding wastes little."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current = [], []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]  # first is the longest
        if current and (len(current) + 1) * width > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batch(token_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids, mask


def content_mask(ids: torch.Tensor, mask: torch.Tensor, bos_id: Optional[int]) -> torch.Tensor:
    """Non-pad tokens, BOS left out (it carries no content and its norm swamps means)."""
    keep = mask.bool()
    if bos_id is not None:
        keep &= ids != bos_id
    return keep


class _ShardWriter:
    """Buffers rows and writes whole-document shards atomically, updating the manifest after each."""

    def __init__(self, folder: Path, manifest: dict, out_dtype: torch.dtype, shard_bytes: int,
                 flush_seconds: float = 15.0):
        self.folder, self.manifest = folder, manifest
        self.out_dtype, self.shard_bytes = out_dtype, shard_bytes
        # Small pooled extractions never fill a shard; flushing on time too means a cancel or
        # crash loses at most this many seconds of work.
        self.flush_seconds = flush_seconds
        self.last_flush = time.monotonic()
        self.parts: dict[str, list[torch.Tensor]] = {}
        self.bytes = 0

    def add(self, **tensors: torch.Tensor) -> None:
        for key, value in tensors.items():
            self.parts.setdefault(key, []).append(value)
        self.bytes += tensors["acts"].numel() * tensors["acts"].element_size()
        if self.bytes >= self.shard_bytes or time.monotonic() - self.last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.parts:
            return
        data = {k: torch.cat(v) for k, v in self.parts.items()}
        acts64 = data["acts"].double()
        data["stat_sum"] = acts64.sum(0)
        data["stat_sumsq"] = (acts64 * acts64).sum(0)
        data["acts"] = data["acts"].to(self.out_dtype).contiguous()
        name = f"shard-{len(self.manifest['shards']):05d}.safetensors"
        blob = save(data)
        atomic_write_bytes(self.folder / name, blob)
        docs = sorted(set(data["doc_index"].tolist()))
        self.manifest["shards"].append(
            {"file": name, "rows": int(data["acts"].shape[0]), "bytes": len(blob), "documents": docs}
        )
        self.manifest["n_rows"] += int(data["acts"].shape[0])
        write_manifest(self.folder, self.manifest)
        self.parts, self.bytes = {}, 0


def write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))


def extract(
    teacher: Teacher,
    documents: Sequence,
    out_dir: str | Path,
    settings: ExtractSettings = ExtractSettings(),
    state: Optional[TaskState] = None,
) -> "ActivationCache":
    """Extract activations of `documents` (objects with .id and .text) into `out_dir`.

    Resumes an interrupted extraction of the same corpus and settings; refuses a folder that
    holds a cache of something else. Returns the opened, complete cache.
    """
    state = state or TaskState()
    hook = settings.validate()
    teacher.check_hook(hook)
    folder = Path(out_dir)
    ids = [d.id for d in documents]
    texts = [d.text for d in documents]
    check_document_ids(ids)
    key = {
        "model": teacher.identity(),
        "hook": hook.name,
        "settings": settings.key(),
        "corpus": corpus_hash(ids, texts),
    }
    manifest = _resume_or_start(folder, key, ids, documents, teacher)
    if manifest["complete"]:
        return ActivationCache(folder)

    done = {d for shard in manifest["shards"] for d in shard["documents"]}
    todo = [i for i in range(len(ids)) if i not in done]
    state.report(len(done), len(ids), "Tokenizing")
    token_lists = dict(zip(todo, teacher.tokenize([texts[i] for i in todo], settings.max_length)))
    batches = plan_batches([len(token_lists[i]) for i in todo], settings.batch_tokens)
    batches = [[todo[j] for j in batch] for batch in batches]

    writer = _ShardWriter(folder, manifest, DTYPES[settings.dtype], settings.shard_mb * 2**20,
                          settings.flush_seconds)
    bos = teacher.bos_id
    n_done, tokens_done, t0 = len(done), 0, time.monotonic()
    runner = precision_runner(teacher, settings.precision, hook.layer)
    for batch in batches:
        state.check_cancelled()
        ids_bt, mask_bt = pad_batch([token_lists[i] for i in batch], teacher.pad_id)
        acts = capture(runner, ids_bt, mask_bt, [hook], state)[hook].float().cpu()
        keep = content_mask(ids_bt, mask_bt, None if settings.include_bos and settings.mode == "tokens" else bos)
        doc_index = torch.tensor(batch, dtype=torch.long)
        if settings.mode == "pooled":
            counts = keep.sum(1)
            # A document of only BOS (empty after tokenizing) pools to zeros; counted as 0 tokens.
            pooled = (acts * keep.unsqueeze(-1)).sum(1) / counts.clamp(min=1).unsqueeze(-1)
            writer.add(acts=pooled, doc_index=doc_index, n_tokens=counts.long())
        else:
            rows, cols = keep.nonzero(as_tuple=True)
            writer.add(acts=acts[rows, cols], doc_index=doc_index[rows],
                       position=cols.to(torch.int32), token_id=ids_bt[rows, cols])
        n_done += len(batch)
        tokens_done += int(mask_bt.sum())
        rate = tokens_done / max(time.monotonic() - t0, 1e-6)
        state.report(n_done, len(ids), f"{n_done:,}/{len(ids):,} documents, {rate:,.0f} tokens/s")
    writer.flush()
    _finish(folder, manifest)
    return ActivationCache(folder)


def precision_runner(teacher: Teacher, precision: str, deepest: int) -> Teacher:
    """The model a long pass at `precision` runs: the teacher (exact), or for 'fast' its
    bfloat16 twin where that pays (models.bfloat16_twin)."""
    return bfloat16_twin(teacher, deepest) if precision == "fast" else teacher


def check_document_ids(ids: Sequence[str]) -> None:
    if not ids:
        raise CacheError("There are no documents to extract.", "Open a file or folder with text first.")
    if len(set(ids)) != len(ids):
        raise CacheError("Document ids are not unique.", "Give every document its own id.")


def _resume_or_start(folder: Path, key: dict, ids: list[str], documents, teacher: Teacher) -> dict:
    return resume_or_start(folder, key, ActivationCache, lambda: {
        "format": CACHE_FORMAT,
        "key": key,
        "hook": key["hook"],
        "mode": key["settings"]["mode"],
        "dtype": key["settings"]["dtype"],
        "tokenizer": {"class": type(teacher.tokenizer).__name__,
                      "vocab_size": len(teacher.tokenizer), "bos_id": teacher.bos_id},
        "d_model": key["model"]["d_model"],
        "n_documents": len(ids),
        "document_ids": ids,
        "labels": [getattr(d, "label", None) for d in documents],
    })


def resume_or_start(folder: Path, key: dict, cache_cls: type["ActivationCache"],
                    new_manifest: Callable[[], dict]) -> dict:
    """The manifest of an unfinished cache of `key` in `folder` (stale temporary files removed),
    or a fresh one (`new_manifest()` plus the empty progress fields) written to a new or empty
    folder. A folder holding anything else is refused, so nothing of the user's is overwritten."""
    if (folder / "manifest.json").exists():
        for stale in folder.glob(".*.tmp-*"):  # half-written files of a killed run
            stale.unlink(missing_ok=True)
        cache = cache_cls(folder, require_complete=False)  # raises CacheError if corrupt
        if cache.manifest["key"] != key:
            raise CacheError(
                f"'{folder}' already holds a cache of a different {cache.SOURCE}, hook, corpus "
                f"or setting ({cache.source_names()}, {cache.manifest['key'].get('hook')}).",
                "Choose an empty folder, or delete that cache first.",
            )
        return cache.manifest
    if folder.exists() and any(p for p in folder.iterdir() if not p.name.startswith(".")):
        raise CacheError(f"'{folder}' is not empty and holds no {cache_cls.NAME}.",
                         "Choose an empty or new folder so nothing of yours is overwritten.")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {**new_manifest(), "n_rows": 0, "n_tokens": 0, "shards": [], "complete": False,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_manifest(folder, manifest)
    return manifest


def _finish(folder: Path, manifest: dict) -> None:
    """Combine per-shard sums into mean/std (per dimension, and per model in a paired cache),
    then mark the cache complete."""
    total = total_sq = None
    n_tokens = 0
    for shard in manifest["shards"]:
        with safe_open(str(folder / shard["file"]), "pt") as data:  # reads only what is asked
            part, part_sq = data.get_tensor("stat_sum"), data.get_tensor("stat_sumsq")
            total = part if total is None else total + part
            total_sq = part_sq if total_sq is None else total_sq + part_sq
            has_counts = "n_tokens" in data.keys()
            n_tokens += int(data.get_tensor("n_tokens").sum()) if has_counts else int(shard["rows"])
    if total is None:  # no shard: every document was empty
        total = total_sq = torch.zeros(manifest["d_model"], dtype=torch.float64)
    count = max(manifest["n_rows"], 1)
    mean = total / count
    var = (total_sq / count - mean * mean).clamp(min=0)
    std = var.sqrt()
    stats = {"mean": mean.float(), "std": std.float(), "count": torch.tensor([manifest["n_rows"]])}
    atomic_write_bytes(folder / "stats.safetensors", save(stats))
    manifest["n_tokens"] = n_tokens
    manifest["complete"] = True
    write_manifest(folder, manifest)


class ActivationCache:
    """A read-only view of a cache folder; every inconsistency raises CacheError."""

    FORMAT = CACHE_FORMAT
    NAME = "activation cache"  # in messages
    SOURCE = "model"
    FIELDS = ("key", "shards", "document_ids", "n_rows", "complete", "d_model", "mode")
    WRITTEN_BY = "Choose the folder that `distillscope extract` wrote."

    def __init__(self, folder: str | Path, require_complete: bool = True):
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.exists():
            raise CacheError(f"'{self.folder}' holds no {self.NAME} (no manifest.json).",
                             self.WRITTEN_BY)
        try:
            manifest = json.loads(path.read_text("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CacheError(f"The cache manifest '{path}' is corrupt ({exc.__class__.__name__}).",
                             "Delete the folder and extract again.")
        if not isinstance(manifest, dict) or manifest.get("format") != self.FORMAT:
            raise CacheError(f"'{path}' is not a distillscope {self.NAME} of format "
                             f"{self.FORMAT}.",
                             "It was written by another tool or version; extract again into a new folder.")
        for field in self.FIELDS:
            if field not in manifest:
                raise CacheError(f"The cache manifest '{path}' lacks '{field}'.", "Extract again.")
        for shard in manifest["shards"]:
            file = self.folder / shard["file"]
            if not file.exists() or file.stat().st_size != shard["bytes"]:
                raise CacheError(f"Shard '{file}' is missing or has the wrong size.",
                                 "The cache was damaged; delete the folder and extract again.")
        if require_complete and not manifest["complete"]:
            raise CacheError(f"The {self.NAME} in '{self.folder}' is unfinished.",
                             "Run the same extraction again: it resumes where it stopped.")
        self.manifest = manifest

    def source_names(self) -> str:
        """What wrote the cache, for messages."""
        return str(self.manifest["key"].get("model", {}).get("name", "?"))

    @property
    def hook(self) -> HookPoint:
        return HookPoint.parse(self.manifest["hook"])

    @property
    def mode(self) -> str:
        return self.manifest["mode"]

    @property
    def document_ids(self) -> list[str]:
        return self.manifest["document_ids"]

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std over the cache's rows (documents or tokens)."""
        data = self._load("stats.safetensors")
        return data["mean"], data["std"]

    def _load(self, name: str) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(self.folder / name))
        except Exception as exc:  # safetensors raises its own error types on bad headers
            raise CacheError(f"Cache file '{self.folder / name}' cannot be read ({exc}).",
                             "The cache was damaged; delete the folder and extract again.")

    def shards(self) -> Iterator[dict[str, torch.Tensor]]:
        for shard in self.manifest["shards"]:
            yield self._load(shard["file"])

    def pooled(self) -> torch.Tensor:
        """Document vectors [n_documents, d_model] in manifest order (pooled caches only)."""
        if self.mode != "pooled":
            raise CacheError("This cache holds token activations, not document vectors.",
                             "Extract with mode 'pooled'.")
        out = torch.zeros(len(self.document_ids), self.manifest["d_model"])
        for data in self.shards():
            out[data["doc_index"]] = data["acts"].float()
        return out

    def shard_header_ok(self) -> bool:
        """Cheap integrity check of every shard header without reading the tensors."""
        for shard in self.manifest["shards"]:
            try:
                with safe_open(str(self.folder / shard["file"]), "pt") as f:
                    f.keys()
            except Exception:
                return False
        return True


@dataclass
class DocumentActivations:
    """One document's token activations at a hook, for the inspect view."""

    token_ids: list[int]
    tokens: list[str]
    acts: torch.Tensor  # [T, D] float32 on CPU
    is_bos: list[bool]

    def pooled(self) -> torch.Tensor:
        """The document vector: the mean over its tokens with BOS left out, as pooled extraction
        makes it (zeros for a document with no other token)."""
        keep = ~torch.tensor(self.is_bos, dtype=torch.bool)
        return self.acts[keep].mean(0) if keep.any() else torch.zeros(self.acts.shape[-1])


@torch.no_grad()
def document_activations(teacher: Teacher, text: str, hook: HookPoint | str,
                         max_length: int = 1024, state: Optional[TaskState] = None,
                         quick: bool = True) -> DocumentActivations:
    """One document for a person waiting on it: `quick` (default) as in models.quick_precision."""
    hook = HookPoint.parse(hook) if isinstance(hook, str) else hook
    token_ids = teacher.tokenize([text], max_length)[0]
    ids, mask = pad_batch([token_ids], teacher.pad_id)
    acts = capture(teacher, ids, mask, [hook], state, quick=quick)[hook][0].float().cpu()
    tokens = teacher.token_strings(token_ids)
    bos = teacher.bos_id
    return DocumentActivations(token_ids, tokens, acts, [t == bos for t in token_ids])
