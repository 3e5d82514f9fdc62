"""The SAE training job: teacher -> activations (cache or stream) -> Trainer, with checkpoints,
pause/cancel, and a final evaluation (explained variance, L0, dead fraction, frequency
histogram, loss recovered) written to the run's artifacts."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file

from core import paths
from core.dictionaries.base import SAE, create
from core.dictionaries.train import Trainer, activation_batches, evaluate
from core.errors import Cancelled, DistillscopeError
from core.jobs.runner import JobContext
from core.jobs.spec import JobSpec
from core.models import HookPoint, Teacher

FOREVER = 10**9  # epochs: training ends on total_tokens, not on the data


def load_documents(corpus: str):
    from core.documents import DEMO_NAMES, load_corpus

    docs = load_corpus([corpus])
    if not docs.documents:
        problems = "; ".join(str(p) for p in docs.problems[:3])
        raise DistillscopeError(f"No readable documents in '{corpus}'{': ' + problems if problems else ''}.",
                                f"Point [data] corpus at a file or folder of text, or use a demo set ({DEMO_NAMES}).")
    return docs.documents


def split_documents(documents, eval_fraction: float):
    """Held-out documents by a hash of their id: stable across runs, resumes and corpus order."""
    def held_out(doc) -> bool:
        h = int(hashlib.sha1(doc.id.encode("utf-8")).hexdigest()[:8], 16)
        return h / 0xFFFFFFFF < eval_fraction
    train = [d for d in documents if not held_out(d)]
    held = [d for d in documents if held_out(d)]
    if not train:
        raise DistillscopeError("Every document was held out for evaluation.", "Lower eval_fraction.")
    return train, held


def cache_settings(spec: JobSpec):
    """The token-mode extraction a cached job trains on (also what the cost estimate looks for)."""
    from core.activations import ExtractSettings

    d = spec.data
    return ExtractSettings(hook=d.hook, mode="tokens", max_length=d.max_length, batch_tokens=d.batch_tokens,
                          precision=d.precision)


def data_batches(spec: JobSpec, teacher: Teacher, documents, seed: int, ctx: JobContext,
                 batch_size: int, drop_last: bool = True, skip: int = 0) -> Iterator[torch.Tensor]:
    """Shuffled token activations at the hook: from an activation cache (extracted once, reused
    by every run on the same teacher, documents and settings) or streamed from the teacher.
    The first `skip` batches are passed over (a resume's data position)."""
    d = spec.data
    if d.source == "stream":
        from core.dictionaries.streaming import teacher_batches

        return teacher_batches(teacher, documents, d.hook, batch_size, max_length=d.max_length,
                               batch_tokens=d.batch_tokens, seed=seed, epochs=FOREVER, state=ctx,
                               drop_last=drop_last, skip_batches=skip, quick=d.precision == "fast")
    from core.activations import extract
    from core.inspect import auto_cache_folder

    settings = cache_settings(spec)
    folder = auto_cache_folder(teacher, documents, settings)
    ctx.log(f"activation cache: {folder}")
    cache = extract(teacher, documents, folder, settings, ctx)
    batches = activation_batches(cache, batch_size, seed=seed, epochs=FOREVER, drop_last=drop_last)
    return itertools.islice(batches, skip, None)


def load_checkpoint(folder: Path, device: torch.device, spec: JobSpec, ctx: JobContext) -> Trainer:
    try:
        sae = SAE.load(folder, device=device)
        tensors = load_file(str(folder / "trainer.safetensors"))
        meta = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise DistillscopeError(f"Checkpoint '{folder}' cannot be read ({exc}).",
                                "Delete that checkpoint folder to resume from the one before it.")
    trainer = Trainer(sae, spec.train)
    trainer.load_state(tensors, meta)
    ctx.elapsed_before = float(meta.get("elapsed", 0.0))
    return trainer


def run_sae_job(spec: JobSpec, ctx: JobContext) -> None:
    d, run_spec = spec.data, spec.run
    ctx.report(0, 1, "Loading the teacher")
    teacher = ctx.load_teacher(d.teacher, None if d.device == "auto" else d.device)
    hook = HookPoint.parse(d.hook)
    teacher.check_hook(hook)
    train_docs, held_docs = split_documents(load_documents(d.corpus), run_spec.eval_fraction)
    ctx.log(f"{teacher.name}, {hook}: {len(train_docs):,} training and {len(held_docs):,} held-out documents")

    checkpoint = ctx.run.latest_checkpoint()
    if checkpoint is not None:
        trainer = load_checkpoint(checkpoint, teacher.device, spec, ctx)
        ctx.log(f"resuming at step {trainer.step:,} from {checkpoint.name}")
    else:
        cfg = spec.sae_config(d_in=teacher.d_model, hook_name=str(hook), model_name=teacher.name)
        trainer = Trainer(create(cfg, seed=spec.train.seed).to(teacher.device), spec.train)

    if trainer.world > 1:
        ctx.log(f"data-parallel over {trainer.world} processes")
    if not trainer.done:
        _train(spec, ctx, teacher, train_docs, trainer)
    _evaluate(spec, ctx, teacher, held_docs or train_docs, trainer.sae)


def _train(spec: JobSpec, ctx: JobContext, teacher: Teacher, documents, trainer: Trainer) -> None:
    cfg = spec.train
    batches = data_batches(spec, teacher, documents, cfg.seed, ctx, cfg.batch_size, skip=trainer.batches)
    ctx.step = trainer.step
    ctx.report(trainer.step, trainer.total_steps, "Training")
    out = None
    for x in batches:
        ctx.wait_if_paused()
        if ctx.should_stop():
            break
        out = trainer.train_step(x)
        ctx.step = trainer.step
        if trainer.step % cfg.log_every == 0 or trainer.done:
            ctx.metric(trainer.metrics(out))
        ctx.report(trainer.step, trainer.total_steps,
                   f"step {trainer.step:,}/{trainer.total_steps:,}, loss {float(out['loss'].detach()):.4g}")
        if trainer.done:
            break
        if trainer.step % spec.run.checkpoint_every == 0:
            ctx.save_checkpoint(trainer, trainer.sae.save)
    if trainer.step > 0:
        ctx.save_checkpoint(trainer, trainer.sae.save)  # at the end, or on cancel
    if ctx.should_stop():
        raise Cancelled()
    if not trainer.done:
        raise DistillscopeError("The data ended before training did.", "Check the corpus.")


def _evaluate(spec: JobSpec, ctx: JobContext, teacher: Teacher, documents, sae: SAE) -> None:
    if not ctx.main:
        return
    run_spec = spec.run
    ctx.report(0, 1, "Evaluating")
    batch = 1024
    held = data_batches(spec, teacher, documents, spec.train.seed + 1, ctx, batch, drop_last=False)
    report = evaluate(sae, held, max_batches=max(1, run_spec.eval_tokens // batch))
    report.pop("frequency")
    if run_spec.loss_recovered_docs > 0:
        from core.dictionaries.loss_recovered import loss_recovered

        ctx.report(0, 1, "Loss recovered")
        report["loss_recovered"] = loss_recovered(
            teacher, sae, documents[:run_spec.loss_recovered_docs], spec.data.hook,
            max_length=spec.data.max_length, batch_tokens=spec.data.batch_tokens, state=ctx)
    report["held_out_documents"] = len(documents)
    sae.save(ctx.run.artifacts_dir / "sae")
    paths.atomic_write_text(ctx.run.artifacts_dir / "eval.json", json.dumps(report, indent=1))
    summary = {k: report[k] for k in ("explained_variance", "l0", "dead_fraction")}
    if "loss_recovered" in report:
        summary["loss_recovered"] = report["loss_recovered"].get("loss_recovered_zero")
    ctx.run.write_status(evaluation=summary)
    ctx.log("evaluation: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if v is not None))
