"""The variant job (issue 6): fine-tune a chosen subset of a teacher's decoder blocks on a corpus,
making a sibling model that shares its tokenizer, so a crosscoder has a pair to compare.

    kind = "variant"
    [data]    teacher (the model copied and fine-tuned), corpus, max_length, device, precision
    [variant] layers ("3-6"), objective ("lm" or "distill"), distill_from, temperature
    [train]   total_steps, batch_size (documents), lr, warm-up and decay, eval_every, ...

Everything but the chosen blocks is frozen: the embedding (tied to the output head, and most of
a small model's parameters), the other blocks and the final norm. The objective is the
next-token loss on the corpus ('lm'), or the KL divergence from another model's next-token
distributions on the corpus ('distill', that model sharing the tokenizer). The head runs only
on positions that predict a real token, so padding and each document's last token cost nothing
there.

Metrics rows: every log_every steps {step, loss, lr, tokens} (and lm_loss when distilling);
before the first step, every eval_every steps and at the end {step, val_loss} on held-out
documents (and val_kl when distilling). Checkpoints hold only the trained blocks' weights and
their AdamW state (safetensors) plus trainer.json; the document order is a function of the seed
and the step, so a resume continues exactly. At the end the whole model is saved as a Hugging
Face folder in artifacts/variant (safetensors, with its tokenizer and variant.json), which
`load_teacher(folder)` and a crosscoder's [pair] variant load; artifacts/evaluation.json has the
held-out loss before and after.

With [variant] text = 'generated' (sequence-level distillation) the variant reads text another
model wrote instead of the corpus: before training, the generator (core.generate: top-k 50,
temperature 0.8, top-p 0.95, batches of GENERATION_BATCH seeded by [train] seed) continues the
first prompt_words words of each training document the run needs (generated_documents, by
default as many as training reads once: total_steps x batch_size) with up to max_new_tokens
tokens. The held-out documents that are evaluated (the first eval_documents) are generated the
same way, so the held-out loss measures what training aims at, the generator's text: on the
human documents a variant that learns the generator's style could look worse while doing what
was asked. Each finished batch is written atomically to generated/parts/ in the run folder, so
a killed run resumes with the batches it lacks (each batch is seeded by its position, so the
result is the one a straight run gives); when all are there they are joined into
generated/corpus.jsonl (id, text, prompt, source document, split), which a resume reuses
without loading the generator, and generated/settings.json (settings, texts, tokens, seconds).

The job never trains the app's own copy of the teacher: it trains a deep copy.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from core import paths
from core.activations import pad_batch
from core.dictionaries.train import lr_factor
from core.errors import Cancelled, DistillscopeError
from core.jobs.runner import JobContext
from core.jobs.sae_job import load_documents, split_documents
from core.jobs.spec import JobSpec, VariantConfig, VariantTrainConfig, parse_layers
from core.models import Teacher, fast_precision, load_teacher

VARIANT_INFO = "variant.json"
GENERATED_DIR = "generated"  # in the run folder: corpus.jsonl, settings.json, parts/
GENERATION_BATCH = 32  # texts sampled at once
# Configs whose logits are not just the head applied to the last hidden state (beyond Gemma's
# soft-capping, handled below): those take the model's own forward pass.
_LOGIT_SCALES = ("logit_scale", "logits_scaling", "output_multiplier_scale")


class VariantError(DistillscopeError):
    """A variant cannot be trained as asked."""


# -- the model's next-token distributions, on the positions that matter -------------------------


def _targets(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions that predict a real next token [B, T] bool, the next tokens [N])."""
    valid = torch.zeros_like(mask, dtype=torch.bool)
    valid[:, :-1] = mask[:, 1:].bool()
    return valid, ids[:, 1:][valid[:, :-1]]


def next_token_logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                      valid: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] (float32) at the `valid` positions: the decoder stack once, then the head
    only where a loss is taken (on a 262k vocabulary the head is most of the work)."""
    cfg = model.config
    head = model.get_output_embeddings()
    base = getattr(model, "base_model", None)
    if base is None or base is model or head is None or any(getattr(cfg, a, None) for a in _LOGIT_SCALES):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits[valid].float()
    hidden = base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    logits = head(hidden[valid]).float()
    cap = getattr(getattr(cfg, "text_config", cfg), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


# -- the trainer ----------------------------------------------------------------------------------


class VariantTrainer:
    """AdamW on the chosen blocks of `teacher.model`, one `train_step()` at a time over
    `train_tokens` (token id lists). `reference` (a Teacher) makes the objective 'distill'."""

    def __init__(self, teacher: Teacher, layers: list[int], cfg: VariantTrainConfig,
                 train_tokens: list[list[int]], objective: str = "lm",
                 reference: Optional[Teacher] = None, temperature: float = 1.0, fast: bool = False):
        if not train_tokens:
            raise VariantError("No training document has two tokens or more.",
                               "Use a corpus of longer documents.")
        self.teacher, self.cfg, self.layers = teacher, cfg, list(layers)
        self.model = teacher.model
        self.train_tokens = train_tokens
        self.objective, self.reference, self.temperature = objective, reference, temperature
        self.fast = fast
        self.model.requires_grad_(False)
        blocks = teacher.layers
        self.named = {f"layers.{i}.{name}": p for i in self.layers
                      for name, p in blocks[i].named_parameters()}
        for p in self.named.values():
            p.requires_grad_(True)
        self.params = list(self.named.values())
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.total_steps = cfg.total_steps
        self.step = 0
        self.tokens = 0  # predicted tokens trained on
        self.lr = 0.0
        self.model.eval()  # no dropout: a step is a function of the weights and the batch

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    @property
    def trained_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    def batch_indices(self, step: int) -> list[int]:
        """The documents of `step`: each epoch is a permutation seeded by (seed, epoch)."""
        n = len(self.train_tokens)
        size = min(self.cfg.batch_size, n)
        per_epoch = n // size
        epoch, i = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g)[i * size:(i + 1) * size].tolist()

    def _autocast(self):
        return fast_precision(self.teacher.device, torch.float32) if self.fast else nullcontext()

    def _losses(self, token_lists: list[list[int]], train: bool) -> dict[str, torch.Tensor]:
        ids, mask = pad_batch(token_lists, self.teacher.pad_id)
        ids, mask = ids.to(self.teacher.device), mask.to(self.teacher.device)
        valid, target = _targets(ids, mask)
        with self._autocast(), (nullcontext() if train else torch.no_grad()):
            logits = next_token_logits(self.model, ids, mask, valid)
        out = {"lm_loss": F.cross_entropy(logits, target), "count": torch.tensor(len(target))}
        if self.reference is not None:
            with self._autocast(), torch.no_grad():
                ref = next_token_logits(self.reference.model, ids, mask, valid)
            t = self.temperature
            log_p = F.log_softmax(ref / t, dim=-1)
            log_q = F.log_softmax(logits / t, dim=-1)
            out["kl"] = (log_p.exp() * (log_p - log_q)).sum(-1).mean() * t * t
        out["loss"] = out["kl"] if self.objective == "distill" else out["lm_loss"]
        return out

    def train_step(self) -> dict:
        """One AdamW step; returns plain floats: step, loss, lr, tokens (and lm_loss when
        distilling)."""
        cfg = self.cfg
        self.lr = cfg.lr * lr_factor(self.step, self.total_steps, cfg.warmup_steps, cfg.decay_start)
        for group in self.opt.param_groups:
            group["lr"] = self.lr
        self.opt.zero_grad(set_to_none=True)
        out = self._losses([self.train_tokens[i] for i in self.batch_indices(self.step)], train=True)
        if not torch.isfinite(out["loss"]):
            raise VariantError(f"Training diverged at step {self.step:,} (the loss is not finite).",
                               "Lower the learning rate.")
        out["loss"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += int(out["count"])
        row = {"step": self.step, "loss": float(out["loss"].detach()), "lr": self.lr, "tokens": self.tokens}
        if self.objective == "distill":
            row["lm_loss"] = float(out["lm_loss"].detach())
        return row

    @torch.no_grad()
    def evaluate(self, token_lists: list[list[int]]) -> dict:
        """Mean next-token loss per predicted token over `token_lists` ('val_loss'; 'val_kl' too
        when there is a reference)."""
        total, kl, count = 0.0, 0.0, 0
        size = max(1, self.cfg.batch_size)
        for start in range(0, len(token_lists), size):
            out = self._losses(token_lists[start:start + size], train=False)
            n = int(out["count"])
            total += float(out["lm_loss"]) * n
            kl += float(out.get("kl", torch.tensor(0.0))) * n
            count += n
        if count == 0:
            raise VariantError("The held-out documents predict no token.", "Use longer documents.")
        row = {"val_loss": total / count}
        if self.reference is not None:
            row["val_kl"] = kl / count
        return row

    # -- checkpoints ------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The trained blocks' weights ('param.layers.<i>.<name>') and AdamW state
        ('opt.<j>.<key>'), as contiguous CPU tensors."""
        out = {f"param.{name}": p.detach().cpu().clone() for name, p in self.named.items()}
        for j, p in enumerate(self.params):
            for key, value in self.opt.state.get(p, {}).items():
                out[f"opt.{j}.{key}"] = value.detach().cpu().clone()
        return {k: v.contiguous() for k, v in out.items()}

    def state_meta(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "layers": self.layers,
                "parameters": list(self.named)}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        if list(meta.get("layers", [])) != self.layers or list(meta.get("parameters", [])) != list(self.named):
            raise VariantError(f"The checkpoint trained blocks {meta.get('layers')}, this run trains "
                               f"{self.layers}.", "Resume with the settings the run was started with.")
        device = self.teacher.device
        with torch.no_grad():
            for name, p in self.named.items():
                value = tensors[f"param.{name}"]
                if value.shape != p.shape:
                    raise VariantError(f"The checkpoint's {name} is {list(value.shape)}, the model's "
                                       f"{list(p.shape)}.", "Resume on the model the run started from.")
                p.copy_(value.to(device))
        self.opt.state.clear()
        for j, p in enumerate(self.params):
            state = {key.split(".", 2)[2]: value for key, value in tensors.items()
                     if key.startswith(f"opt.{j}.")}
            if state:
                self.opt.state[p] = {k: (v if k == "step" else v.to(device)) for k, v in state.items()}
        self.step, self.tokens = int(meta["step"]), int(meta["tokens"])


# -- generated text (sequence-level distillation) ---------------------------------------------------


def generation_plan(spec: JobSpec, train_docs: list, held_docs: list) -> tuple[list, list]:
    """The training documents to write text for (a choice seeded by [train] seed, in corpus order)
    and the held-out ones (the first eval_documents)."""
    v, cfg = spec.variant, spec.train
    wanted = v.generated_documents or cfg.total_steps * cfg.batch_size
    train = list(train_docs)
    if wanted < len(train):
        keep = sorted(random.Random(cfg.seed).sample(range(len(train)), wanted))
        train = [train[i] for i in keep]
    return train, list(held_docs[:cfg.eval_documents])


def opening_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def _generation_key(spec: JobSpec, source: str, docs: list) -> dict:
    """What the generated texts are a function of (besides the generator's weights)."""
    import hashlib

    from core.generate import Sampling

    v = spec.variant
    ids = hashlib.sha1("\n".join(f"{d.id}\t{opening_words(d.text, v.prompt_words)}"
                                  for d in docs).encode("utf-8")).hexdigest()[:16]
    return {"generator": source, "prompt_words": v.prompt_words, "max_new_tokens": v.max_new_tokens,
            "sampling": Sampling().to_dict(), "seed": spec.train.seed, "batch": GENERATION_BATCH,
            "precision": spec.data.precision, "texts": len(docs), "prompts_sha1": ids}


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_generated(path: Path, docs: list) -> Optional[list]:
    """The finished generated corpus as Documents (train ones first), or None when it does not
    hold one row per document in order."""
    from core.documents import Document

    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    if [r.get("source") for r in rows] != [d.id for d in docs]:
        return None
    return [Document(id=r["id"], text=r["text"], source=f"{path}:{n + 1}", label=doc.label)
            for n, (r, doc) in enumerate(zip(rows, docs))]


def generated_documents(spec: JobSpec, ctx: JobContext, teacher: Teacher, reference: Optional[Teacher],
                        device: Optional[str], train_docs: list, held_docs: list) -> tuple[list, list, dict]:
    """(train, held-out documents, generation info): the generator's continuations of the
    documents' opening words, made now, resumed from the parts a killed run wrote, or read back
    from generated/corpus.jsonl."""
    from core.generate import Sampling, batch_starts, sample_batches

    v = spec.variant
    train, held = generation_plan(spec, train_docs, held_docs)
    docs = train + held
    source = v.generator_source()
    folder = ctx.run.folder / GENERATED_DIR
    corpus_path, settings_path, parts = folder / "corpus.jsonl", folder / "settings.json", folder / "parts"
    key = _generation_key(spec, source, docs)
    settings = _read_json(settings_path) or {}
    made_with = {k: x for k, x in (settings.get("key") or {}).items() if k != "generator_fingerprint"}
    if made_with == key and settings.get("complete"):
        done = _read_generated(corpus_path, docs)
        if done is not None:
            ctx.log(f"reusing the generated text: {len(done):,} texts by {source} "
                    f"(sampled in {settings.get('seconds', 0):.0f} s)")
            return done[:len(train)], done[len(train):], settings

    ctx.report(0, len(docs), "Loading the model that writes the text")
    if reference is not None and source == v.distill_from.strip():
        generator = reference
    elif teacher.loaded_as(source, device, "float32"):
        generator = teacher  # not trained yet: the teacher's own weights
        ctx.log("the teacher writes the text (its weights before training)")
    else:
        generator = ctx.load_teacher(source, device)
    if generator is not teacher:
        from core.pairs import check_same_tokenizer

        check_same_tokenizer(teacher, generator)
    key_fp = {**key, "generator_fingerprint": generator.fingerprint}
    if settings.get("key") != key_fp:
        if parts.exists():
            ctx.log("the generated text of an earlier attempt was made with other settings or another "
                    "model: sampling it again")
        shutil.rmtree(folder, ignore_errors=True)
        settings = {}
    parts.mkdir(parents=True, exist_ok=True)
    settings = {"key": key_fp, "generator": source, "generator_name": generator.name,
                "complete": False}
    paths.atomic_write_text(settings_path, json.dumps(settings, indent=1))

    rows: dict[int, list] = {}
    seconds_before = 0.0
    for start in batch_starts(len(docs), GENERATION_BATCH):
        part = _read_json(parts / f"batch-{start:06d}.json")
        if part is not None and part.get("start") == start:
            rows[start] = part["rows"]
            seconds_before += float(part.get("seconds", 0.0))
    if rows:
        ctx.log(f"resuming the generated text: {sum(len(r) for r in rows.values()):,} of {len(docs):,} "
                f"texts are there")
    prompts = [opening_words(d.text, v.prompt_words) for d in docs]
    ctx.log(f"{generator.name} writes up to {v.max_new_tokens} tokens after the first {v.prompt_words} "
            f"words of {len(train):,} training and {len(held):,} held-out documents")
    tok = generator.tokenizer
    started = time.monotonic()
    batches = sample_batches(generator, prompts, v.max_new_tokens, seed=spec.train.seed,
                             batch_size=GENERATION_BATCH, sampling=Sampling(),
                             fast=spec.data.precision == "fast", state=ctx, skip=frozenset(rows))
    for batch in batches:
        with generator.tokenizer_lock:
            texts = [tok.decode(ids, skip_special_tokens=True) for ids in batch.new_ids]
        batch_rows = []
        for i, ids, text in zip(batch.indices, batch.new_ids, texts):
            doc = docs[i]
            batch_rows.append({"id": f"generated-{doc.id}", "text": (prompts[i] + " " + text.strip()).strip(),
                               "prompt": prompts[i], "source": doc.id,
                               "split": "train" if i < len(train) else "held_out", "new_tokens": len(ids)})
        rows[batch.start] = batch_rows
        seconds = time.monotonic() - started
        paths.atomic_write_text(parts / f"batch-{batch.start:06d}.json",
                                json.dumps({"start": batch.start, "seconds": seconds, "rows": batch_rows}))
        seconds_before, started = seconds_before + seconds, time.monotonic()
    ordered = [row for start in sorted(rows) for row in rows[start]]
    paths.atomic_write_text(corpus_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    tokens = sum(r["new_tokens"] for r in ordered)
    settings.update(complete=True, texts=len(ordered), generated_tokens=tokens, seconds=round(seconds_before, 2),
                    tokens_per_s=round(tokens / max(seconds_before, 1e-9), 1))
    paths.atomic_write_text(settings_path, json.dumps(settings, indent=1))
    shutil.rmtree(parts, ignore_errors=True)
    ctx.log(f"generated {len(ordered):,} texts ({tokens:,} new tokens) with {generator.name} in "
            f"{seconds_before:.1f} s ({settings['tokens_per_s']:,.0f} tokens/s); saved to {corpus_path}")
    done = _read_generated(corpus_path, docs)
    return done[:len(train)], done[len(train):], settings


# -- the job --------------------------------------------------------------------------------------


def trainable_copy(source: str, device: Optional[str], ctx: JobContext) -> Teacher:
    """The teacher in float32, the job's own: a deep copy of the app's loaded one when the app
    lends it (training never touches the model the app shows), else loaded for the job."""
    lend = getattr(ctx, "_teachers", None)  # JobContext.load_teacher's provider
    held = lend(source, device) if lend is not None else None
    if held is None or held.dtype != torch.float32:
        return load_teacher(source, device=device, dtype="float32", state=ctx)
    ctx.log(f"copying the teacher the app has loaded: {held.name}")
    ctx.report(0, 1, "Copying the teacher")
    return dataclasses.replace(held, model=copy.deepcopy(held.model))


def tokenized(teacher: Teacher, documents, max_length: int) -> list[list[int]]:
    """Token ids per document, documents with fewer than two tokens left out."""
    return [t for t in teacher.tokenize([d.text for d in documents], max_length) if len(t) >= 2]


def save_variant(teacher: Teacher, folder: Path, info: dict) -> Path:
    """The whole model as a Hugging Face folder (safetensors, float32, no quantization config)
    with its tokenizer and `variant.json`; written beside `folder` and renamed over it."""
    folder = Path(folder)
    work = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        model = teacher.model
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(str(work))
        with teacher.tokenizer_lock:
            teacher.tokenizer.save_pretrained(str(work))
        paths.atomic_write_text(work / VARIANT_INFO, json.dumps(info, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return folder


def _cancel_hooks(teacher: Teacher, ctx: JobContext) -> list:
    """Pause and cancel take effect within one block, not only between steps of many seconds."""
    return [block.register_forward_pre_hook(lambda m, a: ctx.check_cancelled()) for block in teacher.layers]


def run_variant_job(spec: JobSpec, ctx: JobContext) -> None:
    d, v, cfg = spec.data, spec.variant, spec.train
    assert isinstance(v, VariantConfig) and isinstance(cfg, VariantTrainConfig)
    device = None if d.device == "auto" else d.device
    ctx.report(0, 1, "Loading the teacher")
    teacher = trainable_copy(d.teacher, device, ctx)
    try:
        layers = parse_layers(v.layers, teacher.n_layers)
    except ValueError as exc:
        raise VariantError(f"[variant] {exc}", "Choose blocks the model has.")
    reference = None
    if v.objective == "distill":
        from core.pairs import check_same_tokenizer

        ctx.report(0, 1, "Loading the model to distil from")
        reference = ctx.load_teacher(v.distill_from, device)
        check_same_tokenizer(teacher, reference)
    documents = load_documents(d.corpus)
    train_docs, held_docs = split_documents(documents, spec.run.eval_fraction)
    generation = None
    if v.text == "generated":
        train_docs, held_docs, generation = generated_documents(spec, ctx, teacher, reference, device,
                                                                train_docs, held_docs)
    ctx.report(0, 1, "Tokenizing")
    train_tokens = tokenized(teacher, train_docs, d.max_length)
    held_tokens = tokenized(teacher, held_docs, d.max_length)[:cfg.eval_documents]
    if not held_tokens:
        ctx.log("no held-out document: the loss is evaluated on training documents")
        held_tokens = train_tokens[:cfg.eval_documents]
    trainer = VariantTrainer(teacher, layers, cfg, train_tokens, v.objective, reference,
                             v.temperature, fast=d.precision == "fast")
    ctx.log(f"{teacher.name}: training blocks {layers} ({trainer.trained_parameters:,} of "
            f"{sum(p.numel() for p in teacher.model.parameters()):,} parameters) on "
            f"{len(train_tokens):,} {'texts generated from' if generation else 'documents of'} "
            f"'{d.corpus}', {len(held_tokens):,} held out; objective {v.objective}")

    meta = {}
    checkpoint = ctx.run.latest_checkpoint()
    if checkpoint is not None:
        meta = load_checkpoint(checkpoint, trainer, ctx)
        ctx.log(f"resuming at step {trainer.step:,} from {checkpoint.name}")
    hooks = _cancel_hooks(teacher, ctx)
    try:
        if checkpoint is None:
            ctx.report(0, trainer.total_steps, "Evaluating the teacher on held-out documents")
            meta["before"] = trainer.evaluate(held_tokens)
            ctx.metric({"step": 0, **meta["before"]})
            ctx.log(f"held-out loss before training: {meta['before']['val_loss']:.4f}")
        started, first_tokens = time.monotonic(), trainer.tokens
        if not trainer.done:
            _train(spec, ctx, trainer, held_tokens, meta)
        seconds = time.monotonic() - started
        if not ctx.main:
            return
        ctx.report(trainer.step, trainer.total_steps, "Evaluating")
        after = meta.get("last_eval") if meta.get("last_eval_step") == trainer.step else None
        after = after or trainer.evaluate(held_tokens)
    finally:
        for h in hooks:
            h.remove()
    before = meta["before"]
    report = {"val_loss_before": before["val_loss"], "val_loss_after": after["val_loss"],
              "steps": trainer.step, "layers": layers, "objective": v.objective,
              "trained_parameters": trainer.trained_parameters, "tokens": trainer.tokens,
              "train_documents": len(train_tokens), "held_out_documents": len(held_tokens),
              "corpus": d.corpus, "teacher": d.teacher, "teacher_name": teacher.name,
              "train_tokens_per_s": (trainer.tokens - first_tokens) / max(seconds, 1e-9)}
    if generation is not None:
        report.update(text="generated", generator=generation["generator"],
                      generated_texts=generation["texts"], generated_tokens=generation["generated_tokens"],
                      generation_seconds=generation["seconds"])
    if "val_kl" in after:
        report.update(val_kl_before=before.get("val_kl"), val_kl_after=after["val_kl"],
                      distill_from=v.distill_from)
    ctx.report(0, 1, "Saving the variant")
    info = {"base": d.teacher, "base_name": teacher.name, "base_fingerprint": teacher.fingerprint,
            "layers": layers, "objective": v.objective, "distill_from": v.distill_from or None,
            "corpus": d.corpus, "text": v.text,
            "generator": generation["generator"] if generation else None,
            "steps": trainer.step, "run": ctx.run.id,
            "val_loss_before": report["val_loss_before"], "val_loss_after": report["val_loss_after"]}
    folder = save_variant(teacher, ctx.run.artifacts_dir / "variant", info)
    paths.atomic_write_text(ctx.run.artifacts_dir / "evaluation.json", json.dumps(report, indent=1))
    ctx.run.write_status(evaluation={k: report[k] for k in ("val_loss_before", "val_loss_after", "steps")},
                         artifact=str(folder))
    ctx.log(f"held-out loss {report['val_loss_before']:.4f} -> {report['val_loss_after']:.4f} after "
            f"{trainer.step:,} steps; the variant is in {folder} (a crosscoder's [pair] variant "
            f"can name it, or run:{ctx.run.spec.display_name()})")


def _train(spec: JobSpec, ctx: JobContext, trainer: VariantTrainer, held_tokens, meta: dict) -> None:
    cfg = spec.train
    ctx.step = trainer.step
    ctx.report(trainer.step, trainer.total_steps, "Training")
    cancelled = False
    while not trainer.done:
        try:
            ctx.check_cancelled()
            row = trainer.train_step()
        except Cancelled:
            cancelled = True
            break
        ctx.step = trainer.step
        evaluate = trainer.step % cfg.eval_every == 0 or trainer.done
        if evaluate:
            try:
                meta["last_eval"] = trainer.evaluate(held_tokens)
            except Cancelled:
                cancelled = True
                break
            meta["last_eval_step"] = trainer.step
            row.update(meta["last_eval"])
            ctx.log(f"step {trainer.step:,}: held-out loss {row['val_loss']:.4f}")
        if evaluate or trainer.step % cfg.log_every == 0:  # one row per step
            ctx.metric(row)
        ctx.report(trainer.step, trainer.total_steps,
                   f"step {trainer.step:,}/{trainer.total_steps:,}, loss {row['loss']:.4g}")
        if trainer.step % spec.run.checkpoint_every == 0 and not trainer.done:
            ctx.save_checkpoint(trainer, meta=_checkpoint_meta(meta))
    if trainer.step > 0:
        ctx.save_checkpoint(trainer, meta=_checkpoint_meta(meta))  # at the end, or on cancel
    if cancelled or ctx.should_stop():
        raise Cancelled()


def _checkpoint_meta(meta: dict) -> dict:
    """What a resume needs of the job's own bookkeeping beside the trainer's state."""
    return {k: meta[k] for k in ("before", "last_eval", "last_eval_step") if k in meta}


def load_checkpoint(folder: Path, trainer: VariantTrainer, ctx: JobContext) -> dict:
    try:
        tensors = load_file(str(folder / "trainer.safetensors"))
        meta = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
        trainer.load_state(tensors, meta)
    except DistillscopeError:
        raise
    except Exception as exc:  # safetensors, json and key errors alike
        raise DistillscopeError(f"Checkpoint '{folder}' cannot be read ({str(exc)[:200]}).",
                                "Delete that checkpoint folder to resume from the one before it.")
    ctx.elapsed_before = float(meta.get("elapsed", 0.0))
    return {k: meta[k] for k in ("before", "last_eval", "last_eval_step") if k in meta}
