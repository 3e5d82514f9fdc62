"""The crosscoder job (issue 6, seed 003): a base model and its variant -> a paired activation
cache at one hook (extracted once, reused by every run on the same pair, corpus and settings)
-> a CrosscoderTrainer, with live metrics, checkpoints and exact resume -> at the end the
crosscoder in artifacts/crosscoder and artifacts/crosscoder/report.json.

    kind = "crosscoder"
    [pair]       base, variant (a folder, a .gguf, or run:NAME), tokenizer_check
    [data]       corpus, hook, max_length, batch_tokens, device, precision (source = cache)
    [crosscoder] CrosscoderConfig fields: d_latent, architecture, k, l1_coefficient, ...
    [train]      CrosscoderTrainConfig fields: total_steps, batch_size, lr, ...

Metrics rows (every step up to 1,000 steps, else every total_steps / 1,000): step, tokens, lr,
loss, mse_base, fve_base, mse_variant, fve_variant, l0, dead_fraction, and l1_penalty (L1) or
aux and threshold (BatchTopK), as `core.crosscoder.batch_metrics` names them.

report.json: `norm_report` (per latent relative decoder norm, decoder cosine and class; counts
per class; the relative-norm and shared-cosine histograms) with the firing frequency of every
latent over held-out tokens, so latents that never fire there count as dead; the held-out
evaluation (fve and mse per model, l0, dead fraction); the pair, hook and corpus.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Iterator, Optional

import torch
from safetensors.torch import load_file

from core import paths
from core.crosscoder import Crosscoder, CrosscoderTrainer, evaluate, histogram, norm_report
from core.errors import Cancelled, DistillscopeError
from core.jobs.runner import JobContext
from core.jobs.sae_job import load_documents, split_documents
from core.jobs.spec import JobSpec

FOREVER = 10**9  # epochs: training ends on total_steps, not on the data
EVAL_BATCH = 4096
REPORT = "report.json"


def resolve_model_source(source: str, root: Optional[Path] = None) -> str:
    """'run:NAME' -> the artifacts/variant folder of the newest finished variant run whose name
    (or id) is NAME; anything else is returned unchanged."""
    if not source.startswith("run:"):
        return source
    from core.jobs.runs import list_runs

    name = source[len("run:"):].strip()
    seen = []
    for run in list_runs(root):
        try:
            spec = run.spec
        except DistillscopeError:
            continue
        if spec.kind != "variant" or name not in (run.id, spec.display_name()):
            continue
        folder = run.artifacts_dir / "variant"
        if run.status().get("state") == "done" and (folder / "config.json").is_file():
            return str(folder)
        seen.append(run.id)
    if seen:
        raise DistillscopeError(f"No variant run named '{name}' has finished (found {', '.join(seen[:3])}).",
                                "Let the variant run finish (resume it from the Training tab or "
                                "with distillscope train --resume), or name another run.")
    raise DistillscopeError(f"There is no variant run named '{name}'.",
                            "Run `distillscope train examples/variant-demo.toml` first, or give "
                            "[pair] variant as the folder of a model.")


def pair_settings(spec: JobSpec):
    """The token-mode extraction both models are read with (also what the estimate looks for)."""
    from core.activations import ExtractSettings

    d = spec.data
    return ExtractSettings(hook=d.hook, mode="tokens", max_length=d.max_length,
                           batch_tokens=d.batch_tokens, precision=d.precision)


def load_job_pair(spec: JobSpec, ctx: JobContext):
    """The [pair] models, their tokenizers and the hook checked."""
    from core.pairs import ModelPair, check_hooks, check_same_tokenizer

    d, p = spec.data, spec.pair
    device = None if d.device == "auto" else d.device
    variant_source = resolve_model_source(p.variant)
    ctx.report(0, 1, "Loading the base model")
    base = ctx.load_teacher(p.base, device)
    ctx.report(0, 1, "Loading the variant")
    variant = ctx.load_teacher(variant_source, device)
    check_same_tokenizer(base, variant, level=p.tokenizer_check)
    pair = ModelPair(base, variant)
    check_hooks(pair, d.hook)
    if base.source == variant.source and base.fingerprint == variant.fingerprint:
        ctx.log("warning: the base and the variant are the same model; every latent will be shared")
    return pair, variant_source


def paired_cache(spec: JobSpec, pair, documents, ctx: JobContext, what: str):
    from core.pairs import auto_pair_cache_folder, extract_pair

    settings = pair_settings(spec)
    folder = auto_pair_cache_folder(pair, documents, settings)
    ctx.log(f"paired activation cache ({what}): {folder}")
    cache = extract_pair(pair, documents, folder, settings, ctx)
    if cache.n_rows == 0:
        raise DistillscopeError(f"The {what} documents hold no token to train on.",
                                "Use a corpus of longer documents.")
    return cache


def log_every(total_steps: int) -> int:
    return max(1, total_steps // 1000)


def run_crosscoder_job(spec: JobSpec, ctx: JobContext) -> None:
    d, run_spec = spec.data, spec.run
    pair, variant_source = load_job_pair(spec, ctx)
    train_docs, held_docs = split_documents(load_documents(d.corpus), run_spec.eval_fraction)
    ctx.log(f"{pair.base.name} against {pair.variant.name} at {d.hook}: {len(train_docs):,} "
            f"training and {len(held_docs):,} held-out documents")
    cache = paired_cache(spec, pair, train_docs, ctx, "training")
    device = pair.base.device
    cfg = spec.crosscoder_config(d_in=pair.d_model, sources=(spec.pair.base, variant_source))
    trainer = CrosscoderTrainer(Crosscoder(cfg, seed=spec.train.seed).to(device), spec.train)
    checkpoint = ctx.run.latest_checkpoint()
    if checkpoint is not None:
        load_checkpoint(checkpoint, trainer, ctx)
        ctx.log(f"resuming at step {trainer.step:,} from {checkpoint.name}")
    if not trainer.done:
        batches = cache.batches(spec.train.batch_size, seed=spec.train.seed, epochs=FOREVER, drop_last=True)
        _train(spec, ctx, trainer, itertools.islice(batches, trainer.step, None))
    if not ctx.main:
        return
    held = paired_cache(spec, pair, held_docs, ctx, "held-out") if held_docs else cache
    _report(spec, ctx, trainer.model, held, variant_source)


def _train(spec: JobSpec, ctx: JobContext, trainer: CrosscoderTrainer, batches: Iterator[torch.Tensor]) -> None:
    every = log_every(trainer.total_steps)
    ctx.step = trainer.step
    ctx.report(trainer.step, trainer.total_steps, "Training")
    for x in batches:
        ctx.wait_if_paused()
        if ctx.should_stop():
            break
        row = trainer.train_step(x)
        ctx.step = trainer.step
        if trainer.step % every == 0 or trainer.done:
            ctx.metric(row)
        ctx.report(trainer.step, trainer.total_steps,
                   f"step {trainer.step:,}/{trainer.total_steps:,}, loss {row['loss']:.4g}, "
                   f"fve {row['fve_base']:.3f} / {row['fve_variant']:.3f}")
        if trainer.done:
            break
        if trainer.step % spec.run.checkpoint_every == 0:
            ctx.save_checkpoint(trainer)
    if trainer.step > 0:
        ctx.save_checkpoint(trainer)  # at the end, or on cancel
    if ctx.should_stop() and not trainer.done:
        raise Cancelled()
    if not trainer.done:
        raise DistillscopeError("The paired activations ended before training did.", "Check the corpus.")


def load_checkpoint(folder: Path, trainer: CrosscoderTrainer, ctx: JobContext) -> None:
    try:
        tensors = load_file(str(folder / "trainer.safetensors"))
        meta = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
        trainer.load_state_dict({"tensors": tensors, "meta": meta})
    except DistillscopeError:
        raise
    except Exception as exc:  # safetensors, json and shape errors alike
        raise DistillscopeError(f"Checkpoint '{folder}' cannot be read ({str(exc)[:200]}).",
                                "Delete that checkpoint folder to resume from the one before it.")
    ctx.elapsed_before = float(meta.get("elapsed", 0.0))


def _report(spec: JobSpec, ctx: JobContext, model: Crosscoder, held, variant_source: str) -> None:
    ctx.report(0, 1, "Evaluating on held-out tokens")
    batches = held.batches(EVAL_BATCH, seed=spec.train.seed + 1, drop_last=False)
    ev = evaluate(model, batches, max_batches=max(1, -(-spec.run.eval_tokens // EVAL_BATCH)))
    frequency = ev.pop("frequency")
    report = norm_report(model, frequency=frequency)
    freq = torch.tensor(frequency, dtype=torch.float64)
    report.update({
        "evaluation": ev,
        "frequency": frequency,
        "log10_frequency_histogram": histogram(freq[freq > 0].log10(), 40, -8.0, 0.0),
        "never_fired": int((freq == 0).sum()),
        "held_out_tokens": ev["n"],
        "pair": {"base": spec.pair.base, "variant": spec.pair.variant, "variant_folder": variant_source},
        "hook": spec.data.hook, "corpus": spec.data.corpus,
    })
    folder = model.save(ctx.run.artifacts_dir / "crosscoder")
    paths.atomic_write_text(folder / REPORT, json.dumps(report))
    counts = report["counts"]
    summary = {k: ev[k] for k in ("fve_base", "fve_variant", "l0", "dead_fraction")}
    summary.update({"base_only": counts["base-only"], "variant_only": counts["variant-only"],
                    "shared": counts["shared"]})
    ctx.run.write_status(evaluation=summary, artifact=str(folder))
    ctx.log("evaluation on {:,} held-out tokens: fve base {:.3f}, variant {:.3f}, l0 {:.1f}, dead {:.3f}; "
            "latents: {}".format(ev["n"], ev["fve_base"], ev["fve_variant"], ev["l0"], ev["dead_fraction"],
                                 ", ".join(f"{c} {n:,}" for c, n in counts.items())))
