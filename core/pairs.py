"""Model pairs (issue 6, seed 003): a base model and its variant that share a tokenizer, read at
the same hook on the same tokens into one paired activation cache, for crosscoders.

    pair = load_pair("bundled", "runs/.../artifacts/variant", device="cpu")   # checks tokenizers
    check_hooks(pair, "resid_post.6")                                          # layer and width
    cache = extract_pair(pair, documents, folder, ExtractSettings(hook="resid_post.6", mode="tokens"))
    for x_BMD in cache.batches(4096, seed=0):   # [B, 2, D]: row b is token b in base and variant
        ...

The paired cache is the single-model cache of core.activations with two models on the M axis:
`manifest.json` (format PAIRED_FORMAT, both models' identities in its key), whole-document
shards `shard-00000.safetensors` whose `acts` are [rows, 2, d_model] (with doc_index, position
and token_id per row, as a token cache), and once complete `stats.safetensors` (mean and std
[2, d_model]). It is written with the same machinery (planning, padding, BOS-free content mask,
atomic shards, manifest after each shard), so an interrupted extraction resumes with the
documents no finished shard holds, and a folder holding another cache is refused.

Both models read the ids of the BASE tokenizer. The tokenizer check makes sure that is what the
variant would have made of the same text too.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from core import paths
from core.activations import (DTYPES, ActivationCache, ExtractSettings, _finish, _ShardWriter,
                              check_document_ids, content_mask, corpus_hash, pad_batch, plan_batches,
                              resume_or_start)
from core.errors import CacheError, DistillscopeError
from core.models import HookPoint, Teacher, capture, load_teacher
from core.progress import TaskState

PAIRED_FORMAT = "distillscope-paired-activations/1"
MODEL_NAMES = ("base", "variant")
TOKENIZER_CHECKS = ("strict", "content")
# Text that exercises a tokenizer: spaces, case, digits, code, punctuation, accents, CJK, emoji,
# newlines and text that looks like special tokens.
PROBE_STRINGS = (
    "The quick brown fox jumps over the lazy dog.",
    "  two leading spaces, then\ttab and\nnewline\n\n",
    "def mean(xs):\n    return sum(xs) / len(xs)  # 3.14159",
    "HTTP/1.1 200 OK; Content-Length: 4096",
    "naïve café, Straße, Ærøskøbing; 東京は晴れ。 🙂👍",
    "1234567890 +-*/= [](){}<>!?@#$%^&_~`|\\\"'",
    "<bos><eos><pad></s><|endoftext|> tags in plain text",
    "Wait, let me double-check that step: 17 * 23 = 391.",
    "",
)


class PairError(DistillscopeError):
    """Two models cannot be read as a pair (tokenizers, layers or widths differ)."""


SAME_TOKENIZER_HINT = ("A crosscoder reads both models on the same tokens, so they must share a "
                       "tokenizer: pair a model with its own fine-tuned or distilled variant (for "
                       "example Qwen2.5-1.5B with DeepSeek-R1-Distill-Qwen-1.5B), or make a variant "
                       "of the teacher with a 'variant' job.")


@dataclass
class ModelPair:
    """Two causal language models that share a tokenizer: `base` and its `variant`."""

    base: Teacher
    variant: Teacher

    @property
    def models(self) -> tuple[Teacher, Teacher]:
        return (self.base, self.variant)

    @property
    def d_model(self) -> int:
        return self.base.d_model

    @property
    def n_layers(self) -> int:
        return min(self.base.n_layers, self.variant.n_layers)

    def identity(self) -> dict:
        """What a paired cache records to know which models produced it."""
        return {"base": self.base.identity(), "variant": self.variant.identity()}

    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        """The base tokenizer's ids: both models read these."""
        return self.base.tokenize(texts, max_length)


# -- checks ---------------------------------------------------------------------------------------


def _special_ids(teacher: Teacher) -> dict[str, Optional[int]]:
    tok = teacher.tokenizer
    return {name: getattr(tok, f"{name}_token_id", None) for name in ("bos", "eos", "pad")}


def check_same_tokenizer(a: Teacher, b: Teacher, probes: Sequence[str] = PROBE_STRINGS,
                         level: str = "strict") -> None:
    """Raise PairError naming the first difference between the tokenizers of `a` and `b`.

    'strict' compares the vocabulary size, the BOS/EOS/PAD ids and how every probe string is
    tokenized with special tokens added (what extraction feeds the models). 'content' compares
    only the probe strings without special tokens and a sample of the vocabulary's regular token
    strings (special tokens left out):
    for pairs whose regular vocabulary is the same but whose special tokens were redefined (both
    then read the base tokenizer's ids, BOS included)."""
    if level not in TOKENIZER_CHECKS:
        raise ValueError(f"Tokenizer check '{level}' is unknown; use one of {', '.join(TOKENIZER_CHECKS)}.")
    names = f"'{a.name}' and '{b.name}'"
    ta, tb = a.tokenizer, b.tokenizer
    if level == "strict":
        va, vb = len(ta), len(tb)
        if va != vb:
            raise PairError(f"{names} do not share a tokenizer: their vocabularies have {va:,} and "
                            f"{vb:,} tokens.", SAME_TOKENIZER_HINT)
        sa, sb = _special_ids(a), _special_ids(b)
        for name in ("bos", "eos", "pad"):
            if sa[name] != sb[name]:
                raise PairError(f"{names} do not share a tokenizer: their {name.upper()} token ids are "
                                f"{sa[name]} and {sb[name]}.",
                                SAME_TOKENIZER_HINT + " When only special tokens differ, [pair] "
                                "tokenizer_check = 'content' reads both models with the base's ids.")
    else:
        n = min(len(ta), len(tb))
        special = set(getattr(ta, "all_special_ids", [])) | set(getattr(tb, "all_special_ids", []))
        sample = sorted((set(range(0, n, max(1, n // 2000))) | {n - 1}) - special)
        with a.tokenizer_lock:
            strings_a = ta.convert_ids_to_tokens(sample)
        with b.tokenizer_lock:
            strings_b = tb.convert_ids_to_tokens(sample)
        for i, x, y in zip(sample, strings_a, strings_b):
            if x != y:
                raise PairError(f"{names} do not share a tokenizer: token id {i} is {x!r} in one and "
                                f"{y!r} in the other.", SAME_TOKENIZER_HINT)
    specials = level == "strict"
    if not specials:  # text that spells a special token of either tokenizer reads as that token
        marks = [t for tok in (ta, tb) for t in getattr(tok, "all_special_tokens", []) if t]
        probes = [p for p in probes if not any(m in p for m in marks)]
    for text in probes:
        with a.tokenizer_lock:
            ids_a = list(ta(text, add_special_tokens=specials)["input_ids"])
        with b.tokenizer_lock:
            ids_b = list(tb(text, add_special_tokens=specials)["input_ids"])
        if ids_a != ids_b:
            at = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), min(len(ids_a), len(ids_b)))
            raise PairError(f"{names} do not share a tokenizer: they tokenize {text[:40]!r} differently "
                            f"(from token {at}: {ids_a[at:at + 4]} against {ids_b[at:at + 4]}).",
                            SAME_TOKENIZER_HINT)


def check_hooks(pair: ModelPair, hook: HookPoint | str) -> HookPoint:
    """Both models have the hook's layer and the same width there (a crosscoder here reads one
    d_in for both models); raises PairError otherwise."""
    hook = HookPoint.parse(hook) if isinstance(hook, str) else hook
    for role, teacher in zip(MODEL_NAMES, pair.models):
        try:
            teacher.check_hook(hook)
        except ValueError as exc:
            raise PairError(f"The {role} model cannot be read at {hook}: {exc}",
                            "Choose a layer both models have.")
    da, db = pair.base.d_model, pair.variant.d_model
    if da != db:
        raise PairError(f"The base model is {da:,} wide and the variant {db:,} at {hook}.",
                        "This crosscoder reads the same width from both models: pair models of "
                        "the same architecture and size.")
    return hook


def load_pair(base_source: str, variant_source: str, device: Optional[str] = None,
              state: Optional[TaskState] = None, tokenizer_check: str = "strict",
              loader: Optional[Callable[[str, Optional[str]], Teacher]] = None) -> ModelPair:
    """Load both models (with `loader(source, device)`, default core.models.load_teacher) and
    check that they share a tokenizer."""
    if loader is None:
        def loader(source, dev):
            return load_teacher(source, device=dev, state=state)
    base = loader(base_source, device)
    variant = loader(variant_source, device)
    check_same_tokenizer(base, variant, level=tokenizer_check)
    return ModelPair(base, variant)


# -- paired extraction ---------------------------------------------------------------------------


def pair_cache_key(pair: ModelPair, hook: HookPoint, settings: ExtractSettings, documents) -> dict:
    return {"models": pair.identity(), "hook": hook.name, "settings": settings.key(),
            "corpus": corpus_hash([d.id for d in documents], [d.text for d in documents])}


def auto_pair_cache_folder(pair: ModelPair, documents: Sequence, settings: ExtractSettings) -> Path:
    """A paired cache folder in the user cache dir, one per (pair, corpus, settings)."""
    key = json.dumps([pair.identity(), corpus_hash([d.id for d in documents], [d.text for d in documents]),
                      settings.key(results_only=False)], sort_keys=True)
    return paths.cache_dir() / "activations" / ("pair-" + hashlib.sha256(key.encode()).hexdigest()[:20])


def extract_pair(pair: ModelPair, documents: Sequence, out_dir: str | Path,
                 settings: ExtractSettings = ExtractSettings(mode="tokens"),
                 state: Optional[TaskState] = None) -> "PairedCache":
    """Both models' token activations at `settings.hook` on the same tokens into one cache at
    `out_dir` (rows [2, d_model]: base, variant). Resumes an interrupted extraction of the same
    pair, corpus and settings; refuses a folder holding anything else. Returns the complete cache."""
    state = state or TaskState()
    if settings.mode != "tokens":
        raise CacheError("A paired cache holds token activations (a crosscoder's training data).",
                         "Extract with mode 'tokens'.")
    try:
        hook = settings.validate()
    except ValueError as exc:
        raise CacheError(f"The extraction settings are invalid: {exc}", "Correct the setting.")
    hook = check_hooks(pair, hook)
    folder = Path(out_dir)
    ids = [d.id for d in documents]
    texts = [d.text for d in documents]
    check_document_ids(ids)
    manifest = _resume_or_start(folder, pair_cache_key(pair, hook, settings, documents), pair, documents)
    if manifest["complete"]:
        return PairedCache(folder)

    done = {d for shard in manifest["shards"] for d in shard["documents"]}
    todo = [i for i in range(len(ids)) if i not in done]
    state.report(len(done), len(ids), "Tokenizing")
    token_lists = dict(zip(todo, pair.tokenize([texts[i] for i in todo], settings.max_length)))
    batches = [[todo[j] for j in batch]
               for batch in plan_batches([len(token_lists[i]) for i in todo], settings.batch_tokens)]
    writer = _ShardWriter(folder, manifest, DTYPES[settings.dtype], settings.shard_mb * 2**20,
                          settings.flush_seconds)
    bos = pair.base.bos_id
    quick = settings.precision == "fast"
    n_done, tokens_done, t0 = len(done), 0, time.monotonic()
    for batch in batches:
        state.check_cancelled()
        ids_bt, mask_bt = pad_batch([token_lists[i] for i in batch], pair.base.pad_id)
        acts = torch.stack([capture(m, ids_bt, mask_bt, [hook], state, quick=quick)[hook].float().cpu()
                            for m in pair.models], dim=2)  # [B, T, 2, D]
        keep = content_mask(ids_bt, mask_bt, None if settings.include_bos else bos)
        rows, cols = keep.nonzero(as_tuple=True)
        writer.add(acts=acts[rows, cols], doc_index=torch.tensor(batch, dtype=torch.long)[rows],
                   position=cols.to(torch.int32), token_id=ids_bt[rows, cols])
        n_done += len(batch)
        tokens_done += int(mask_bt.sum())
        rate = tokens_done / max(time.monotonic() - t0, 1e-6)
        state.report(n_done, len(ids), f"{n_done:,}/{len(ids):,} documents, {rate:,.0f} tokens/s "
                                       "through both models")
    writer.flush()
    _finish(folder, manifest)
    return PairedCache(folder)


def _resume_or_start(folder: Path, key: dict, pair: ModelPair, documents) -> dict:
    return resume_or_start(folder, key, PairedCache, lambda: {
        "format": PAIRED_FORMAT,
        "key": key,
        "hook": key["hook"],
        "mode": "tokens",
        "dtype": key["settings"]["dtype"],
        "models": list(MODEL_NAMES),
        "tokenizer": {"class": type(pair.base.tokenizer).__name__,
                      "vocab_size": len(pair.base.tokenizer), "bos_id": pair.base.bos_id},
        "d_model": pair.d_model,
        "n_documents": len(documents),
        "document_ids": [d.id for d in documents],
        "labels": [getattr(d, "label", None) for d in documents],
    })


class PairedCache(ActivationCache):
    """A read-only view of a paired cache folder (the single cache's checks, its own format);
    `stats()` gives per-model mean and std [2, d_model]; shards hold acts [rows, 2, D],
    doc_index, position and token_id [rows]."""

    FORMAT = PAIRED_FORMAT
    NAME = "paired activation cache"
    SOURCE = "pair"
    FIELDS = ("key", "shards", "document_ids", "n_rows", "complete", "d_model")
    WRITTEN_BY = "Choose the folder a crosscoder job or extract_pair wrote."

    def source_names(self) -> str:
        models = self.manifest["key"].get("models", {})
        return " and ".join(str(m.get("name", "?")) for m in models.values()) or "other models"

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    def batches(self, batch_size: int, seed: int = 0, epochs: int = 1,
                drop_last: bool = False) -> Iterator[torch.Tensor]:
        """Shuffled float32 paired batches [batch_size, 2, D] with bounded memory (the single
        cache's `activation_batches`)."""
        from core.dictionaries.train import activation_batches

        return activation_batches(self, batch_size, seed=seed, epochs=epochs, drop_last=drop_last)


__all__ = ["MODEL_NAMES", "PAIRED_FORMAT", "PROBE_STRINGS", "TOKENIZER_CHECKS", "ModelPair", "PairError",
           "PairedCache", "auto_pair_cache_folder", "check_hooks", "check_same_tokenizer", "extract_pair",
           "load_pair"]
