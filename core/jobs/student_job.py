"""The student job (seed 000): teacher -> document vectors (or token residuals) at the hook,
cached once -> a tiny transformer trained on their z-normalized values, with validation every
eval_every steps, early stopping on a plateau (best weights kept), checkpoints with exact
resume, and at the end the student folder and evaluation.json in the run's artifacts.

Metrics rows: every log_every steps {step, epoch, lr, loss} (training MSE in the target's
z-space); every eval_every steps {step, val_mse, val_cosine, best_val_mse} on the held-out
documents, in the document z-space whatever the target.

The job runs in one process (under torchrun every rank would train the same student; only
rank 0 writes): a student is small enough that one device is the right size.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core import paths
from core.errors import Cancelled, DistillscopeError
from core.jobs.runner import JobContext
from core.jobs.sae_job import load_documents, split_documents
from core.jobs.spec import JobSpec
from core.models import HookPoint, Teacher
from core.student.data import build_data, document_reference, pooled_targets, token_targets
from core.student.model import StudentModel, init_embeddings_from
from core.student.student import Student
from core.student.train import StudentTrainer


def cache_settings(spec: JobSpec):
    """The extraction a student trains on: pooled document vectors, or every token's residual
    for token targets (also what the cost estimate looks for)."""
    from core.activations import ExtractSettings

    d = spec.data
    mode = "tokens" if spec.student.target == "tokens" else "pooled"
    return ExtractSettings(hook=d.hook, mode=mode, max_length=d.max_length, batch_tokens=d.batch_tokens,
                          precision=d.precision)


def _targets(spec: JobSpec, teacher: Teacher, documents, ctx: JobContext):
    """Raw pooled vectors [N, D] of `documents` (and their token rows and positions in tokens
    mode), from an activation cache extracted once for every run on the same data."""
    from core.activations import extract
    from core.inspect import auto_cache_folder

    settings = cache_settings(spec)
    folder = auto_cache_folder(teacher, documents, settings)
    ctx.log(f"activation cache ({settings.mode}): {folder}")
    cache = extract(teacher, documents, folder, settings, ctx)
    ids = [d.id for d in documents]
    if settings.mode == "pooled":
        return pooled_targets(cache, ids), None, None
    acts, positions = token_targets(cache, ids)
    pooled = torch.stack([a.mean(0) if len(a) else torch.zeros(cache.manifest["d_model"]) for a in acts])
    return pooled, acts, positions


def _prepare(spec: JobSpec, teacher: Teacher, ctx: JobContext):
    d = spec.data
    train_docs, held_docs = split_documents(load_documents(d.corpus), spec.run.eval_fraction)
    if not held_docs:
        raise DistillscopeError("No document was held out for validation.",
                                "Raise [run] eval_fraction or use a larger corpus.")
    documents = train_docs + held_docs
    pooled, acts, positions = _targets(spec, teacher, documents, ctx)
    n = len(train_docs)
    ref = document_reference(pooled[:n], f"{n:,} training documents of '{d.corpus}'", d.hook)
    token_ref = None
    if acts is not None:
        n_rows = sum(len(a) for a in acts[:n])
        token_ref = document_reference(acts[:n], f"{n_rows:,} training tokens of '{d.corpus}'", d.hook)
    ctx.report(0, 1, "Tokenizing")
    tokens = teacher.tokenize([doc.text for doc in documents], d.max_length)

    def part(sl: slice):
        return build_data(tokens[sl], pooled[sl], ref, acts[sl] if acts else None,
                          positions[sl] if positions else None, token_ref)
    return part(slice(0, n)), part(slice(n, None)), ref, token_ref, held_docs, pooled[n:]


def _student(model, teacher: Teacher, spec: JobSpec, ref, token_ref, info=None) -> Student:
    return Student(model, teacher.tokenizer, ref, spec.data.hook, teacher.identity(),
                   spec.data.max_length, token_ref, info)


def run_student_job(spec: JobSpec, ctx: JobContext) -> None:
    d, cfg = spec.data, spec.train
    ctx.report(0, 1, "Loading the teacher")
    teacher = ctx.load_teacher(d.teacher, None if d.device == "auto" else d.device)
    try:
        teacher.check_hook(HookPoint.parse(d.hook))
    except ValueError as exc:
        raise DistillscopeError(str(exc), "Choose a layer the teacher has in [data] hook.")
    train, held, ref, token_ref, held_docs, held_raw = _prepare(spec, teacher, ctx)
    held_texts = [doc.text for doc in held_docs]
    ctx.log(f"{teacher.name}, {d.hook}: {len(train):,} training and {len(held):,} held-out documents")

    torch.manual_seed(cfg.seed)
    embed = teacher.model.get_input_embeddings().weight
    vocab = max(int(embed.shape[0]), len(teacher.tokenizer))
    model = StudentModel(spec.student, vocab, teacher.d_model, teacher.bos_id).to(teacher.device)
    trainer = StudentTrainer(model, cfg, train, held, teacher.pad_id)
    checkpoint = ctx.run.latest_checkpoint()
    if checkpoint is not None:
        load_checkpoint(checkpoint, trainer, ctx)
        ctx.log(f"resuming at step {trainer.step:,} from {checkpoint.name}")
    elif spec.student.init_embeddings == "teacher":
        init_embeddings_from(model, embed)
    ctx.run.write_status(total_steps=trainer.total_steps)
    student = _student(model, teacher, spec, ref, token_ref)
    to_doc_z = student.from_prediction if token_ref is not None else None

    started, first_step = time.monotonic(), trainer.step
    if not trainer.done:
        _train(spec, ctx, trainer, to_doc_z)
    seconds = time.monotonic() - started
    if not ctx.main:
        return
    trainer.restore_best()
    ctx.report(0, 1, "Evaluating")
    final = trainer.measure(to_doc_z)
    student.vectors(held_texts[:8], ctx)  # warm-up: the first call allocates and picks kernels
    t0 = time.monotonic()
    student.vectors(held_texts, ctx)
    vectors_rate = len(held) / max(time.monotonic() - t0, 1e-9)
    report = {"val_mse": final["val_mse"], "val_cosine": final["val_cosine"], "steps": trainer.step,
              "best_step": trainer.best_step, "epochs": trainer.step / trainer.steps_per_epoch,
              "stopped_early": trainer.stopped_early, "train_documents": len(train),
              "held_out_documents": len(held), "target": spec.student.target,
              "train_docs_per_s": (trainer.step - first_step) * cfg.batch_size / max(seconds, 1e-9),
              "vectors_docs_per_s": vectors_rate, "hook": d.hook, "teacher": teacher.name}
    student.info = {**{k: report[k] for k in ("val_mse", "val_cosine", "steps", "train_documents")},
                    "corpus": d.corpus, "eval_fraction": spec.run.eval_fraction, "precision": d.precision}
    student.save(ctx.run.artifacts_dir / "student")
    paths.atomic_write_text(ctx.run.artifacts_dir / "evaluation.json", json.dumps(report, indent=1))
    ctx.run.write_status(evaluation={k: report[k] for k in ("val_mse", "val_cosine", "steps")})
    ctx.log(f"evaluation: val_mse {report['val_mse']:.4g}, val_cosine {report['val_cosine']:.4g} "
            f"(best of {trainer.step:,} steps at {trainer.best_step:,})")
    _agreement(spec, teacher, student, ctx, held_docs, held_raw)


def _agreement(spec: JobSpec, teacher: Teacher, student: Student, ctx: JobContext,
               held_docs: list, held_raw: torch.Tensor) -> None:
    """The seed's agreement table (artifacts/student/agreement.json) when the bundled starter
    dictionary reads the student's layer; otherwise say how to get it. The held-out documents'
    teacher vectors are the job's own targets (`held_raw`, pooled, in `held_docs` order)."""
    from core.features import STARTER_DICTIONARY
    from core.student.evaluation import default_sets, evaluate_agreement

    sae = starter_dictionary_for(teacher, spec.data.hook)
    if sae is None:
        ctx.log("agreement: no bundled dictionary reads this model and layer; run "
                "`distillscope agreement RUN --dictionary DIR` with one that does")
        return
    ctx.report(0, 1, "Agreement with the teacher")
    try:
        sets, seen = default_sets(student)
        for s in sets:
            if s.key == "id" and [d.id for d in s.documents] == [d.id for d in held_docs]:
                s.teacher_raw = held_raw
        result = evaluate_agreement(student, teacher, sae, sets, ctx, seen_texts=seen,
                                    dictionary_name=STARTER_DICTIONARY.name)
    except DistillscopeError as exc:  # the student is saved: a missing corpus must not fail the run
        ctx.log(f"agreement not computed: {exc.what} {exc.hint}")
        return
    result.save(student.folder)
    for line in result.table().splitlines():
        ctx.log(f"agreement: {line}" if line.strip() else "agreement:")


def starter_dictionary_for(teacher: Teacher, hook: str):
    """The starter dictionary when it was trained on this teacher at `hook`, else None."""
    from core.dictionaries import load
    from core.dictionaries.formats import check_fits
    from core.features import STARTER_DICTIONARY

    try:
        sae = load(STARTER_DICTIONARY)
        fits = check_fits(sae, teacher).name == hook
    except DistillscopeError:
        return None
    return sae if fits and sae.cfg.model_name == teacher.name else None


def _train(spec: JobSpec, ctx: JobContext, trainer: StudentTrainer, to_doc_z) -> None:
    cfg = spec.train
    ctx.step = trainer.step
    ctx.report(trainer.step, trainer.total_steps, "Training")
    while not trainer.done:
        ctx.wait_if_paused()
        if ctx.should_stop():
            break
        row = trainer.train_step()
        ctx.step = trainer.step
        # one row per step: readers keep only the last row written for a step
        evaluate = trainer.step % cfg.eval_every == 0 or trainer.step == trainer.total_steps
        if evaluate:
            row.update(trainer.evaluate(to_doc_z))
            ctx.log(f"step {trainer.step:,}: val_mse {row['val_mse']:.4f}, val_cosine {row['val_cosine']:.4f}")
            if trainer.stopped_early:
                ctx.log(f"early stop: no improvement in {trainer.bad_evals} validations; "
                        f"best at step {trainer.best_step:,}")
        if evaluate or trainer.step % cfg.log_every == 0:
            ctx.metric(row)
        ctx.report(trainer.step, trainer.total_steps,
                   f"step {trainer.step:,}/{trainer.total_steps:,}, loss {row['loss']:.4g}"
                   + (f", val cos {trainer.last_eval['val_cosine']:.3f}" if trainer.last_eval else ""))
        if trainer.step % spec.run.checkpoint_every == 0 and not trainer.done:
            ctx.save_checkpoint(trainer, partial(_write_model, trainer))
    if trainer.step > 0:
        ctx.save_checkpoint(trainer, partial(_write_model, trainer))  # at the end, or on cancel
    if ctx.should_stop() and not trainer.done:
        raise Cancelled()


def _write_model(trainer: StudentTrainer, folder: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))


def load_checkpoint(folder: Path, trainer: StudentTrainer, ctx: JobContext) -> None:
    try:
        weights = load_file(str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "trainer.safetensors"))
        meta = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
        trainer.model.load_state_dict(weights)
        trainer.load_state(tensors, meta)
    except DistillscopeError:
        raise
    except Exception as exc:  # safetensors, json and shape errors alike
        raise DistillscopeError(f"Checkpoint '{folder}' cannot be read ({str(exc)[:200]}).",
                                "Delete that checkpoint folder to resume from the one before it.")
    ctx.elapsed_before = float(meta.get("elapsed", 0.0))
