"""What a job will cost before it starts: tokens, steps, cache disk, memory, and time measured by
a short calibration on this device (a few real training steps at the job's sizes, and one
teacher forward pass when a teacher is at hand).

A variant job is timed on real steps of a copy of its model on the corpus's own documents (the
model is loaded for it when the app has not loaded it), and with text = 'generated' also on a
few real sampling steps of the generator over the first batch of its prompts (the steps then
timed on texts of the generated length); a crosscoder job on real trainer steps
at its sizes plus the base model's forward speed, twice (both models are read). Both are timed
with the threads the app gives a job on a CPU (all cores but one)."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from core.dictionaries.base import DTYPES, create
from core.dictionaries.train import Trainer
from core.jobs.spec import JobSpec
from core.progress import TaskState


@dataclass
class Estimate:
    documents: int
    tokens: int  # content tokens in the corpus (BOS excluded), counted or estimated
    tokens_counted: bool  # True: tokenized; False: estimated from characters
    steps: int
    epochs: float  # passes over the training tokens
    cache_bytes: int  # disk for the activation cache (0 when streaming or already cached)
    cache_reused: bool
    memory_bytes: int  # SAE + gradients + Adam + one batch's activations, plus the teacher
    seconds_per_step: float  # measured here
    extract_tokens_per_s: Optional[float]  # measured here when a teacher was given
    seconds: Optional[float]  # whole job: extraction (if needed) + training
    device: str
    notes: list[str] = field(default_factory=list)
    disk_label: str = "Disk for the cache"
    rows: list[tuple[str, str]] = field(default_factory=list)  # kind-specific, shown before Time

    def lines(self) -> list[tuple[str, str]]:
        """(label, value) rows for a table, in plain words."""
        def size(n: float) -> str:
            for unit in ("B", "KB", "MB", "GB", "TB"):
                if n < 1024 or unit == "TB":
                    return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
                n /= 1024
        def duration(s: Optional[float]) -> str:
            if s is None:
                return "unknown"
            return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"
        tokens = f"{self.tokens:,}" + ("" if self.tokens_counted else " (estimated from characters)")
        rows = [("Documents", f"{self.documents:,}"), ("Tokens in the corpus", tokens),
                ("Training", f"{self.steps:,} steps, {self.epochs:.1f} passes over the data"),
                (self.disk_label, "reused, already extracted" if self.cache_reused else size(self.cache_bytes)),
                ("Memory", size(self.memory_bytes)),
                ("Speed (measured)", f"{self.seconds_per_step * 1000:,.0f} ms per step on {self.device}"),
                *self.rows,
                ("Time", duration(self.seconds))]
        if self.extract_tokens_per_s:
            rows.insert(6, ("Teacher (measured)", f"{self.extract_tokens_per_s:,.0f} tokens/s"))
        return rows


def estimate(spec: JobSpec, documents: Sequence, teacher=None, calibration_steps: int = 3,
             state: Optional[TaskState] = None) -> Estimate:
    """Cost of `spec` over `documents` (objects with .text). With `teacher` (a core Teacher of
    the spec's model), tokens are counted and extraction speed measured; without, tokens are
    estimated at 4 characters each and only training is timed."""
    state = state or TaskState()
    spec.validate()
    kinds = {"student": _estimate_student, "variant": _estimate_variant,
             "crosscoder": _estimate_crosscoder, "sae": _estimate_sae}
    with job_threads():  # timed at the threads the job will get
        return kinds[spec.kind](spec, documents, teacher, calibration_steps, state)


def _estimate_sae(spec: JobSpec, documents: Sequence, teacher, calibration_steps: int,
                  state: TaskState) -> Estimate:
    notes = []
    if teacher is not None:
        d_model, device = teacher.d_model, teacher.device
        state.report(0, 3, "Counting tokens")
        token_lists = teacher.tokenize([d.text for d in documents], spec.data.max_length)
        bos = teacher.bos_id
        tokens = sum(len(t) - (1 if t and t[0] == bos else 0) for t in token_lists)
        counted = True
    else:
        d_model = _guess_width(spec)
        device = torch.device("cuda" if torch.cuda.is_available() and spec.data.device != "cpu" else "cpu")
        tokens = sum(min(len(d.text) // 4 + 1, spec.data.max_length) for d in documents)
        counted = False
        notes.append("Load the model to count tokens and time the teacher exactly.")
    train_tokens = max(1, int(tokens * (1 - spec.run.eval_fraction)))
    steps = spec.train.total_steps
    sae_cfg = spec.sae_config(d_in=d_model)
    bytes_per = torch.finfo(DTYPES[sae_cfg.dtype]).bits // 8
    params = 2 * d_model * sae_cfg.d_sae + sae_cfg.d_sae + d_model
    batch = spec.train.batch_size
    memory = params * bytes_per * 4 + batch * sae_cfg.d_sae * 4 * 6 + batch * d_model * 4 * 4
    if teacher is not None:
        memory += sum(p.numel() * p.element_size() for p in teacher.model.parameters())

    cache_reused, cache_bytes = False, 0
    if spec.data.source == "cache":
        cache_bytes = tokens * d_model * 4
        if teacher is not None:
            cache_reused = _cache_complete(spec, teacher, documents)

    state.report(1, 3, "Timing training steps")
    per_step = _time_training(spec, d_model, device, calibration_steps)
    extract_rate = None
    if teacher is not None:
        state.report(2, 3, "Timing the teacher")
        extract_rate = _time_teacher(spec, teacher, token_lists)
    seconds = per_step * steps
    needs_teacher = spec.data.source == "stream" or not cache_reused
    if needs_teacher:
        passes = steps * batch / max(train_tokens, 1) if spec.data.source == "stream" else 1.0
        if extract_rate:
            seconds += passes * tokens / extract_rate
        else:
            seconds = None
    state.report(3, 3, "Estimated")
    return Estimate(documents=len(documents), tokens=tokens, tokens_counted=counted, steps=steps,
                    epochs=steps * batch / max(train_tokens, 1), cache_bytes=0 if cache_reused else cache_bytes,
                    cache_reused=cache_reused, memory_bytes=memory, seconds_per_step=per_step,
                    extract_tokens_per_s=extract_rate, seconds=seconds, device=str(device), notes=notes)


def _guess_width(spec: JobSpec) -> int:
    """The hidden size without loading the model: the bundled teacher's, or config.json's."""
    import json
    from pathlib import Path

    source = spec.data.teacher
    if source == "bundled":
        return 640
    config = Path(source) / "config.json"
    try:
        data = json.loads(config.read_text())
        data = data.get("text_config", data)
        return int(data["hidden_size"])
    except (OSError, ValueError, KeyError):
        return 1024


def _cache_complete(spec: JobSpec, teacher, documents) -> bool:
    from core.activations import ActivationCache
    from core.errors import CacheError
    from core.inspect import auto_cache_folder
    from core.jobs.sae_job import cache_settings, split_documents

    train_docs, _ = split_documents(documents, spec.run.eval_fraction)
    try:
        ActivationCache(auto_cache_folder(teacher, train_docs, cache_settings(spec)))
        return True
    except CacheError:
        return False


def _time_training(spec: JobSpec, d_model: int, device, steps: int) -> float:
    """Median seconds per step of the real trainer at the job's sizes, on random data."""
    g = torch.Generator().manual_seed(0)
    cfg = spec.sae_config(d_in=d_model)
    trainer = Trainer(create(cfg, seed=0).to(device), spec.train)
    x = torch.randn(spec.train.batch_size, d_model, generator=g).to(device)
    trainer.train_step(x)  # warm-up (and data-dependent initialisation)
    times = []
    for _ in range(max(1, steps)):
        t0 = time.perf_counter()
        trainer.train_step(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _time_teacher(spec: JobSpec, teacher, token_lists) -> Optional[float]:
    """Tokens per second of forward passes up to the hook on the corpus's own documents: three
    of the batches extraction makes, from the longest documents to the shortest. Forward passes
    only: the demo recipe reads 3,900-4,300 tokens/s here and extracts, writing included, at
    about 3,100."""
    from core.activations import pad_batch, plan_batches, precision_runner
    from core.models import HookPoint, capture

    if not token_lists:
        return None
    batches = plan_batches([len(t) for t in token_lists], spec.data.batch_tokens)
    hook = HookPoint.parse(spec.data.hook)
    runner = precision_runner(teacher, spec.data.precision, hook.layer)  # as extraction runs it
    ids, mask = pad_batch(token_lists[:1], teacher.pad_id)
    capture(runner, ids[:, :16], mask[:, :16], [hook])  # warm-up: first calls are slow
    tokens, seconds = 0, 0.0
    for k in sorted({0, len(batches) // 2, len(batches) - 1}):
        ids, mask = pad_batch([token_lists[i] for i in batches[k]], teacher.pad_id)
        t0 = time.perf_counter()
        capture(runner, ids, mask, [hook])
        seconds += time.perf_counter() - t0
        tokens += int(mask.sum())
    return tokens / max(seconds, 1e-6)


# -- the student job -----------------------------------------------------------------------------


def _estimate_student(spec: JobSpec, documents: Sequence, teacher, calibration_steps: int,
                      state: TaskState) -> Estimate:
    """Steps are the most (epochs x steps per epoch): early stopping usually ends sooner. Token
    targets cache every token's residual (not one vector per document), hold them in memory
    while training, and make each step compare every token: the estimate shows all three."""
    import math

    from core.jobs.sae_job import split_documents
    from core.student.model import StudentModel

    d, cfg, tokens_mode = spec.data, spec.train, spec.student.target == "tokens"
    notes = ["Early stopping (patience {}) usually ends training before the last epoch.".format(cfg.patience),
             "Not in the time: writing the cache (the teacher is timed on its forward passes), "
             "validation, and the agreement table at the end."]
    if teacher is not None:
        state.report(0, 3, "Counting tokens")
        token_lists = teacher.tokenize([doc.text for doc in documents], d.max_length)
        bos = teacher.bos_id
        tokens = sum(len(t) - (1 if t and t[0] == bos else 0) for t in token_lists)
        d_model, device, counted = teacher.d_model, teacher.device, True
        vocab, pad, bos_id = len(teacher.tokenizer), teacher.pad_id, bos
    else:
        token_lists = [[2] + [3] * min(len(doc.text) // 4 + 1, d.max_length - 1) for doc in documents]
        tokens = sum(len(t) - 1 for t in token_lists)
        d_model, counted, vocab, pad, bos_id = _guess_width(spec), False, 262_144, 0, 2
        device = torch.device("cuda" if torch.cuda.is_available() and d.device != "cpu" else "cpu")
        notes.append("Load the model to count tokens and time the teacher exactly.")
    n_train = len(split_documents(documents, spec.run.eval_fraction)[0]) if documents else 0
    per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    steps = per_epoch * cfg.epochs
    model = StudentModel(spec.student, vocab, d_model, bos_id)
    params = sum(p.numel() for p in model.parameters())
    held = tokens * d_model * 4 if tokens_mode else len(documents) * d_model * 4
    mean_len = max(2, round(sum(len(t) for t in token_lists) / max(len(token_lists), 1)))
    # While the targets are prepared, the cache's rows (mapped from disk) and their z-normalized
    # copy are both in memory. This counts tensors only. The demo recipe's measured peak is 6.8 GB
    # with its cache on disk (7.3 GB extracting it; this estimate: 4.7): during training the
    # process grows by about 2.7 GB, which allocators hold, not tensors. Capping oneDNN's primitive
    # cache (ONEDNN_PRIMITIVE_CACHE_CAPACITY=16) saves 0.8 GB of it but makes bfloat16 inference
    # 27% slower; a fixed glibc mmap threshold saves 0.9 GB but makes steps 30% slower.
    activations = cfg.batch_size * mean_len * spec.student.d_hidden * 4 * 24
    memory = params * 4 * 4 + held * (2 if tokens_mode else 1) + activations
    if teacher is not None:
        memory += sum(p.numel() * p.element_size() for p in teacher.model.parameters())
    cache_bytes = held
    if device.type == "cpu":
        notes.append("Memory counts tensors. On a CPU the math library's caches and the heap grow "
                     "while training: the demo recipe peaks at 6.8 GB with its cache on disk, 7.3 GB "
                     "extracting it.")
    if tokens_mode:
        notes.append(f"Token-level targets: the cache holds every token's residual "
                     f"({tokens / max(len(documents), 1):.0f}x the pooled cache) and training holds it in memory.")
    cache_reused = teacher is not None and _student_cache_complete(spec, teacher, documents)
    state.report(1, 3, "Timing training steps")
    per_step = _time_student(spec, model.to(device), calibration_batches(token_lists, cfg, calibration_steps),
                             vocab, pad)
    extract_rate = None
    if teacher is not None:
        state.report(2, 3, "Timing the teacher")
        extract_rate = _time_teacher(spec, teacher, token_lists)
    seconds = per_step * steps
    if not cache_reused:
        seconds = seconds + tokens / extract_rate if extract_rate else None
    state.report(3, 3, "Estimated")
    return Estimate(documents=len(documents), tokens=tokens, tokens_counted=counted, steps=steps,
                    epochs=float(cfg.epochs), cache_bytes=0 if cache_reused else cache_bytes,
                    cache_reused=cache_reused, memory_bytes=memory, seconds_per_step=per_step,
                    extract_tokens_per_s=extract_rate, seconds=seconds, device=str(device), notes=notes)


def _student_cache_complete(spec: JobSpec, teacher, documents) -> bool:
    from core.activations import ActivationCache
    from core.errors import CacheError
    from core.inspect import auto_cache_folder
    from core.jobs.sae_job import split_documents
    from core.jobs.student_job import cache_settings

    train_docs, held_docs = split_documents(documents, spec.run.eval_fraction)
    try:
        ActivationCache(auto_cache_folder(teacher, train_docs + held_docs, cache_settings(spec)))
        return True
    except CacheError:
        return False


def calibration_batches(token_lists: list, cfg, steps: int) -> list[list[int]]:
    """Document lengths of `steps` + 3 batches of an epoch as training visits them (sorted by
    length within pools), picked at even quantiles of their padded size: a step's time grows
    with its longest document (padding, attention), so the mean over these is the epoch's mean
    step (timed after a first pass over the same shapes). A batch of mean-length documents
    gave 0.12 s a step for the demo recipe, which trains at 0.20 s; these batches 0.18-0.22 s."""
    from core.student.data import epoch_order

    lengths = [len(t) for t in token_lists] or [2]
    batches = sorted(epoch_order(len(lengths), cfg.batch_size, cfg.seed, 0, lengths),
                     key=lambda b: len(b) * max(lengths[i] for i in b))
    n = min(len(batches), max(1, steps) + 3)
    picks = [batches[round((k + 0.5) * len(batches) / n - 0.5)] for k in range(n)]
    return [[max(2, lengths[i]) for i in b] for b in picks]


def _time_student(spec: JobSpec, model, batches: list[list[int]], vocab: int, pad: int) -> float:
    """Mean seconds per step of the real student trainer on random tokens in batches of the
    given document lengths (token targets included when the spec asks for them)."""
    from core.student.data import StudentData
    from core.student.train import StudentTrainer

    g = torch.Generator().manual_seed(0)
    d = model.d_out
    lengths = [n for b in batches for n in b]
    bos = model.bos_id if model.bos_id is not None else 0
    tokens = [[bos] + torch.randint(3, vocab, (n - 1,), generator=g).tolist() for n in lengths]
    token_z = positions = None
    if spec.student.target == "tokens":
        positions = [torch.arange(1, n) for n in lengths]
        token_z = [torch.randn(n - 1, d, generator=g) for n in lengths]
    n = len(lengths)
    data = StudentData(tokens, torch.randn(n, d, generator=g), token_z, positions or [])
    trainer = StudentTrainer(model, spec.train, data, data, pad)
    ends = list(itertools.accumulate(len(b) for b in batches))
    index = [list(range(end - len(b), end)) for end, b in zip(ends, batches)]
    for batch in index:  # warm-up: a first step at each shape picks and builds its kernels
        trainer.train_step(batch)
    times = []
    for batch in index:
        t0 = time.perf_counter()
        trainer.train_step(batch)
        if model.out.weight.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


# -- helpers of the variant and crosscoder estimates ----------------------------------------------


@contextlib.contextmanager
def job_threads():
    """torch's threads as the app's Runner gives a job on a CPU (cores - 1), then back."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _count_tokens(spec: JobSpec, documents: Sequence, teacher) -> tuple[list[list[int]], int, bool]:
    """Token lists (BOS first, or stand-ins of 4 characters a token), content tokens, counted."""
    d = spec.data
    if teacher is not None:
        token_lists = teacher.tokenize([doc.text for doc in documents], d.max_length)
        bos = teacher.bos_id
        return token_lists, sum(len(t) - (1 if t and t[0] == bos else 0) for t in token_lists), True
    token_lists = [[2] + [3] * min(len(doc.text) // 4 + 1, d.max_length - 1) for doc in documents]
    return token_lists, sum(len(t) - 1 for t in token_lists), False


def _median_seconds(step, n: int, cuda: bool) -> float:
    step()  # warm-up: the first step allocates and picks kernels
    times = []
    for _ in range(max(1, n)):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


# -- the variant job -----------------------------------------------------------------------------


def _estimate_variant(spec: JobSpec, documents: Sequence, teacher, calibration_steps: int,
                      state: TaskState) -> Estimate:
    """Steps as given; time = measured steps x total_steps + the held-out evaluations (timed on
    one batch) + loading and saving. Disk: the saved model (float32, all of it) and checkpoints
    of the trained blocks with their AdamW moments."""
    import dataclasses

    from core.jobs.sae_job import split_documents
    from core.jobs.spec import parse_layers
    from core.jobs.variant_job import VariantTrainer
    from core.models import load_teacher

    d, v, cfg = spec.data, spec.variant, spec.train
    notes = []
    device = None if d.device == "auto" else d.device
    state.report(0, 4, "Loading the model to time its training" if teacher is None else "Copying the model")
    if teacher is None or teacher.dtype != torch.float32:
        model = load_teacher(d.teacher, device=device, dtype="float32", state=state)
        held_bytes = 0
    else:
        import copy

        model = dataclasses.replace(teacher, model=copy.deepcopy(teacher.model))
        held_bytes = sum(p.numel() * p.element_size() for p in teacher.model.parameters())
    state.report(1, 4, "Counting tokens")
    train_docs, held_docs = split_documents(documents, spec.run.eval_fraction)
    train_lists = [t for t in model.tokenize([doc.text for doc in train_docs], d.max_length) if len(t) >= 2]
    held_lists = [t for t in model.tokenize([doc.text for doc in held_docs], d.max_length)
                  if len(t) >= 2][:cfg.eval_documents] or train_lists[:cfg.eval_documents]
    bos = model.bos_id
    tokens = sum(len(t) - (1 if t and t[0] == bos else 0)
                 for t in model.tokenize([doc.text for doc in documents], d.max_length))
    layers = parse_layers(v.layers, model.n_layers)
    reference = None
    if v.objective == "distill":
        state.report(1, 4, "Loading the model to distil from")
        reference = load_teacher(v.distill_from, device=device, state=state)
    generation_rows, generation_seconds = [], 0.0
    if v.text == "generated":
        train_lists, held_lists, generation_rows, generation_seconds = _estimate_generation(
            spec, model, teacher, reference, device, train_docs, held_docs, calibration_steps, state)
        notes.append("Generation is timed for texts of full length; it ends sooner where the generator "
                     "ends every text of a batch early.")
    trainer = VariantTrainer(model, layers, cfg, train_lists, v.objective, reference, v.temperature,
                             fast=d.precision == "fast")
    state.report(2, 4, "Timing training steps")
    cuda = model.device.type == "cuda"
    per_step = _median_seconds(trainer.train_step, calibration_steps, cuda)
    state.report(3, 4, "Timing an evaluation")
    batch = held_lists[:cfg.batch_size]
    t0 = time.perf_counter()
    trainer.evaluate(batch)
    eval_seconds = (time.perf_counter() - t0) * len(held_lists) / max(len(batch), 1)
    n_evals = 1 + cfg.total_steps // cfg.eval_every + (cfg.total_steps % cfg.eval_every != 0)
    params = sum(p.numel() for p in model.model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.model.parameters())
    trained = trainer.trained_parameters
    checkpoint_bytes = trained * 4 * 3 * min(spec.run.keep_checkpoints, max(1, cfg.total_steps // spec.run.checkpoint_every))
    disk = param_bytes + checkpoint_bytes
    mean_len = sum(len(t) for t in train_lists) / max(len(train_lists), 1)
    vocab = int(getattr(model.text_config, "vocab_size", len(model.tokenizer)))
    # Per predicted token: float32 logits, their bfloat16 original, log-softmax and gradients
    # (about 28 bytes a vocabulary entry; distilling adds the other model's). Measured on the
    # demo variant: 5.6 GB peak against 5.2 GB from this count.
    logits_bytes = int(cfg.batch_size * mean_len * vocab * (28 if reference is None else 48))
    autocast_copies = params * 2 if d.precision == "fast" and model.device.type == "cpu" else 0
    memory = held_bytes + param_bytes + trained * 4 * 3 + logits_bytes + autocast_copies + int(0.5e9)
    if reference is not None:
        memory += sum(p.numel() * p.element_size() for p in reference.model.parameters())
    load_save = param_bytes / 150e6  # measured: the bundled teacher (1.1 GB) loads and saves in ~7 s
    seconds = per_step * cfg.total_steps + eval_seconds * n_evals + load_save + generation_seconds
    steps_per_epoch = max(1, len(train_lists) // min(cfg.batch_size, max(len(train_lists), 1)))
    notes.append(f"Timed with {torch.get_num_threads()} thread(s), as the app runs a job on this device.")
    if d.precision != "fast" and model.device.type == "cpu":
        notes.append("[data] precision = 'fast' trains about 1.5x faster on CPUs with AMX.")
    rows = [("Trained parameters", f"{trained / 1e6:,.1f}M of {params / 1e6:,.0f}M (blocks {v.layers})"),
            ("Evaluations", f"{n_evals} of {len(held_lists)} held-out documents, about "
                            f"{eval_seconds:.0f} s each"), *generation_rows]
    state.report(4, 4, "Estimated")
    return Estimate(documents=len(documents), tokens=tokens, tokens_counted=True, steps=cfg.total_steps,
                    epochs=cfg.total_steps / steps_per_epoch, cache_bytes=disk, cache_reused=False,
                    memory_bytes=memory, seconds_per_step=per_step, extract_tokens_per_s=None,
                    seconds=seconds, device=str(model.device), notes=notes,
                    disk_label="Disk for the variant and checkpoints", rows=rows)


def _estimate_generation(spec: JobSpec, model, teacher, reference, device, train_docs, held_docs,
                         calibration_steps: int, state: TaskState):
    """text = 'generated': (stand-in train and held-out token lists of the generated texts'
    length, rows for the table, seconds of sampling). Sampling is timed on the first batch of the
    real prompts: one pass over the prompts with one token, then more tokens; the difference is
    the time of a token step. Full length is assumed (the generator may end texts sooner)."""
    import math

    from core.jobs.variant_job import GENERATION_BATCH, generation_plan, opening_words
    from core.models import load_teacher
    from core.pairs import check_same_tokenizer

    d, v = spec.data, spec.variant
    source = v.generator_source()
    if reference is not None and source == v.distill_from.strip():
        generator = reference
    elif model.loaded_as(source, device, "float32"):
        generator = model  # its weights are still the teacher's: training is timed after this
    elif teacher is not None and teacher.loaded_as(source, device):
        generator = teacher
    else:
        state.report(1, 4, "Loading the model that writes the text")
        generator = load_teacher(source, device=device, state=state)
    if generator is not model:
        check_same_tokenizer(model, generator)
    gen_train, gen_held = generation_plan(spec, train_docs, held_docs)
    docs = gen_train + gen_held
    prompts = [opening_words(doc.text, v.prompt_words) for doc in docs]
    state.report(2, 4, "Timing the generation")
    per_token, prefill = _time_sampling(generator, prompts[:GENERATION_BATCH], d.precision == "fast",
                                        max(2, calibration_steps + 1))
    n_batches = math.ceil(len(prompts) / GENERATION_BATCH)
    seconds = n_batches * (prefill + per_token * (v.max_new_tokens - 1))

    # Training then reads prompt + max_new_tokens tokens per text: stand-ins of that length.
    def stand_ins(subset: list) -> list[list[int]]:
        out = []
        for doc, prompt in zip(model.tokenize([x.text for x in subset], d.max_length),
                               model.tokenize([opening_words(x.text, v.prompt_words) for x in subset], d.max_length)):
            length = min(d.max_length, len(prompt) + v.max_new_tokens)
            out.append((doc * (length // max(len(doc), 1) + 1))[:length])
        return [t for t in out if len(t) >= 2]

    train_lists = stand_ins(gen_train)
    held_lists = stand_ins(gen_held)[:spec.train.eval_documents] or train_lists[:spec.train.eval_documents]
    minutes = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
    rows = [("Generated text", f"{len(docs):,} texts of up to {v.max_new_tokens} new tokens by "
                               f"{generator.name} ({len(gen_train):,} to train on, {len(gen_held):,} "
                               f"held out), after {v.prompt_words} opening words"),
            ("Generation (measured)", f"{per_token * 1000:,.0f} ms per token for {GENERATION_BATCH} texts "
                                      f"at once; about {minutes} in all")]
    return train_lists, held_lists, rows, seconds


def _time_sampling(generator, prompts: list[str], fast: bool, steps: int) -> tuple[float, float]:
    """(seconds per token step, seconds of the first pass over the prompts) of core.generate's
    sampler on this batch of prompts, with no end-of-text so every step runs."""
    from core.generate import Sampling, banned_ids, left_pad, sample

    ids, mask = left_pad(generator.tokenize(prompts, 2048), generator.pad_id)
    ids, mask = ids.to(generator.device), mask.to(generator.device)
    banned = banned_ids(generator.tokenizer)

    def run(n: int) -> float:
        gen = torch.Generator(device=generator.device).manual_seed(0)
        t0 = time.perf_counter()
        sample(generator.model, ids, mask, n, banned, None, gen, Sampling(), fast)  # .tolist() syncs
        return time.perf_counter() - t0

    run(1)  # warm-up: the first calls are slow
    first = run(1)
    longer = run(1 + steps)
    return max((longer - first) / steps, 1e-6), first


# -- the crosscoder job --------------------------------------------------------------------------


def _estimate_crosscoder(spec: JobSpec, documents: Sequence, teacher, calibration_steps: int,
                         state: TaskState) -> Estimate:
    """Time = training steps measured at the job's sizes + reading the corpus through both
    models (the base's measured speed, twice) unless the paired cache exists."""
    from core.crosscoder import Crosscoder, CrosscoderTrainer

    d, cfg = spec.data, spec.train
    notes = [f"Timed with {torch.get_num_threads()} thread(s), as the app runs a job on this device."]
    state.report(0, 3, "Counting tokens")
    token_lists, tokens, counted = _count_tokens(spec, documents, teacher)
    if teacher is not None:
        d_model, device = teacher.d_model, teacher.device
    else:
        d_model = _guess_width(spec)
        device = torch.device("cuda" if torch.cuda.is_available() and d.device != "cpu" else "cpu")
        notes.append("Load the base model to count tokens and time reading it exactly.")
    train_tokens = max(1, int(tokens * (1 - spec.run.eval_fraction)))
    cc_cfg = spec.crosscoder_config(d_in=d_model)
    state.report(1, 3, "Timing training steps")
    trainer = CrosscoderTrainer(Crosscoder(cc_cfg, seed=0).to(device), cfg)
    x = torch.randn(cfg.batch_size, 2, d_model, generator=torch.Generator().manual_seed(0)).to(device)
    per_step = _median_seconds(lambda: trainer.train_step(x), calibration_steps, device.type == "cuda")
    params = sum(p.numel() for p in trainer.model.parameters())
    memory = params * 4 * 4 + cfg.batch_size * cc_cfg.d_latent * 4 * 6 + cfg.batch_size * 2 * d_model * 4 * 4
    extract_rate = None
    cache_reused = _pair_cache_complete(spec, teacher, documents)
    if teacher is not None:
        memory += 2 * sum(p.numel() * p.element_size() for p in teacher.model.parameters())
        if not cache_reused:
            state.report(2, 3, "Timing the base model")
            extract_rate = _time_teacher(spec, teacher, token_lists)
    seconds = per_step * cfg.total_steps
    if not cache_reused:
        seconds = seconds + 2 * tokens / extract_rate if extract_rate else None
    state.report(3, 3, "Estimated")
    rows = [("Crosscoder", f"{cc_cfg.d_latent:,} latents over 2 x {d_model:,} dimensions, "
                           f"{params / 1e6:,.1f}M parameters")]
    return Estimate(documents=len(documents), tokens=tokens, tokens_counted=counted, steps=cfg.total_steps,
                    epochs=cfg.total_steps * cfg.batch_size / train_tokens,
                    cache_bytes=0 if cache_reused else tokens * 2 * d_model * 4, cache_reused=cache_reused,
                    memory_bytes=memory, seconds_per_step=per_step, extract_tokens_per_s=extract_rate,
                    seconds=seconds, device=str(device), notes=notes,
                    disk_label="Disk for the paired cache", rows=rows)


def _pair_cache_complete(spec: JobSpec, teacher, documents) -> bool:
    """The paired training cache exists already; knowing needs the variant's identity, so only
    when the variant resolves to a folder whose identity can be read without loading weights."""
    if teacher is None:
        return False
    from core.errors import DistillscopeError
    from core.jobs.crosscoder_job import pair_settings, resolve_model_source
    from core.jobs.sae_job import split_documents
    from core.pairs import PairedCache, auto_pair_cache_folder

    try:
        variant = _identity_stub(resolve_model_source(spec.pair.variant))
    except DistillscopeError:
        return False
    if variant is None:
        return False
    train_docs, _ = split_documents(documents, spec.run.eval_fraction)
    try:
        PairedCache(auto_pair_cache_folder(_IdentityPair(teacher, variant), train_docs, pair_settings(spec)))
        return True
    except DistillscopeError:
        return False


class _IdentityStub:
    def __init__(self, identity: dict):
        self._identity = identity

    def identity(self) -> dict:
        return self._identity


class _IdentityPair:
    def __init__(self, base, variant):
        self.base, self.variant = base, variant

    def identity(self) -> dict:
        return {"base": self.base.identity(), "variant": self.variant.identity()}


def _identity_stub(source: str):
    """What Teacher.identity() of a Hugging Face folder would be, from its files alone (None for
    anything else)."""
    import json
    from pathlib import Path

    from core.models import BUNDLED, _fingerprint

    if source == BUNDLED:
        return None
    path = Path(source).expanduser()
    if not (path / "config.json").is_file():
        return None
    try:
        config = json.loads((path / "config.json").read_text())
        config = config.get("text_config", config)
        return _IdentityStub({"name": path.name, "source": str(path.resolve()),
                              "fingerprint": _fingerprint(path), "n_layers": int(config["num_hidden_layers"]),
                              "d_model": int(config["hidden_size"])})
    except (OSError, ValueError, KeyError):
        return None
