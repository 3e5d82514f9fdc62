"""`distillscope`: no arguments opens the GUI; subcommands run the same work headless."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional

from core.documents import DEMO_NAMES
from core.errors import DistillscopeError


def _progress_bar(unit: str = "doc"):
    """A terminal progress bar fed by TaskState callbacks."""
    from tqdm import tqdm

    bar = tqdm(total=1, unit=unit, dynamic_ncols=True, file=sys.stderr)

    def update(done: int, total: int, message: str) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.n = done
        bar.set_description_str(message.split(",")[-1].strip() if "tokens/s" in message else message)
        bar.refresh()

    return bar, update


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="write an activation cache for a corpus",
                       description="Run documents through the teacher and stream activations at one "
                                   "hook point into a resumable cache folder.")
    p.add_argument("inputs", nargs="+", help=f"files or folders (.txt .md .jsonl .csv .tsv), or a demo set: {DEMO_NAMES}")
    p.add_argument("--out", required=True, help="cache folder (created; an interrupted run resumes)")
    p.add_argument("--model", default="bundled", help="'bundled', a Hugging Face folder or a .gguf file")
    p.add_argument("--layer", type=int, default=6, help="decoder block index (default 6)")
    p.add_argument("--hook", default="resid_post", choices=["resid_post", "mlp_in", "mlp_out"])
    p.add_argument("--mode", default="pooled", choices=["pooled", "tokens"],
                   help="pooled: one mean vector per document (BOS excluded); tokens: every token")
    p.add_argument("--max-length", type=int, default=256, help="tokens per document (default 256)")
    p.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per forward pass")
    p.add_argument("--shard-mb", type=int, default=64, help="shard size in MB")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="stored dtype of the activations")
    p.add_argument("--precision", default="exact", choices=["exact", "fast"],
                   help="fast: the teacher in bfloat16 on CPUs with AMX (about 3x faster, "
                   "activations within 0.4%%)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--text-field", default="text", help="JSONL/CSV field holding the text")
    p.add_argument("--label-field", default="label", help="JSONL/CSV field holding the label")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a model folder to run its own Python code (off unless you ask)")


def cmd_extract(args) -> int:
    from core.activations import ExtractSettings, extract
    from core.documents import load_corpus
    from core.models import load_teacher
    from core.progress import TaskState

    settings = ExtractSettings(hook=f"{args.hook}.{args.layer}", mode=args.mode,
                               max_length=args.max_length, batch_tokens=args.batch_tokens,
                               shard_mb=args.shard_mb, dtype=args.dtype,
                               precision=args.precision)
    try:
        settings.validate()
    except ValueError as exc:
        raise DistillscopeError(str(exc), "Fix the option and run again.")
    corpus = load_corpus(args.inputs, text_field=args.text_field, label_field=args.label_field)
    for problem in corpus.problems[:20]:
        print(f"warning: {problem}", file=sys.stderr)
    if len(corpus.problems) > 20:
        print(f"warning: ... and {len(corpus.problems) - 20} more problems", file=sys.stderr)
    if not corpus.documents:
        raise DistillscopeError("No readable documents in the input.", "See the warnings above.")
    print(f"{len(corpus.documents):,} documents from {corpus.name}", file=sys.stderr)

    bar, update = _progress_bar()
    state = TaskState(update)
    start = time.monotonic()
    try:
        teacher = load_teacher(args.model, device=args.device, trust_remote_code=args.trust_remote_code,
                               state=state)
        try:
            teacher.check_hook(settings.validate())
        except ValueError as exc:
            raise DistillscopeError(str(exc), "Choose a layer the model has.")
        cache = extract(teacher, corpus.documents, args.out, settings, state)
    finally:
        bar.close()
    m = cache.manifest
    seconds = time.monotonic() - start
    print(f"wrote {m['n_rows']:,} rows ({m['n_tokens']:,} tokens, {m['n_documents']:,} documents, "
          f"{len(m['shards'])} shards) at {m['hook']} to {args.out} in {seconds:.1f} s")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="run a training job from a TOML spec (headless)",
                       description="Run the job a spec describes, writing the same run folder the "
                                   "app shows. Under `torchrun --nproc-per-node N` it trains "
                                   "data-parallel. Ctrl-C cancels after a checkpoint.")
    p.add_argument("spec", nargs="?", help="the job spec (.toml)")
    p.add_argument("--resume", metavar="RUN", help="continue a run folder (or run id) from its checkpoint")
    p.add_argument("--describe", action="store_true", help="print every setting with its help and range")
    p.add_argument("--write-default", metavar="FILE", help="write a default spec to FILE and exit")
    p.add_argument("--kind", default="sae", choices=["sae", "student", "variant", "crosscoder"],
                   help="the job kind --describe and --write-default are about (default sae)")


def _add_runs(sub) -> None:
    sub.add_parser("runs", help="list the runs in the data folder with their states")


def cmd_train(args) -> int:
    from core.jobs import JobSpec, Run, runs_root
    from core.jobs.spec import describe_spec

    if args.describe:
        for section, entries in describe_spec(args.kind).items():
            print(f"[{section}]")
            for e in entries:
                bounds = " ".join(x for x in (f"min {e['min']}" if e["min"] is not None else "",
                                              f"max {e['max']}" if e["max"] is not None else "",
                                              f"one of {', '.join(map(str, e['choices']))}" if e["choices"] else "") if x)
                print(f"  {e['name']} ({e['type']}, default {e['default']!r}{'; ' + bounds if bounds else ''})")
                print(f"      {e['help']}")
        return 0
    if args.write_default:
        from core.paths import atomic_write_text
        atomic_write_text(args.write_default, JobSpec.for_kind(args.kind).to_toml())
        print(f"wrote {args.write_default}")
        return 0
    if bool(args.spec) == bool(args.resume):
        raise DistillscopeError("Give either a spec file or --resume RUN.",
                                "e.g. distillscope train job.toml, or distillscope train --resume RUN_FOLDER")
    world = _init_distributed()
    if args.resume:
        folder = args.resume if "/" in args.resume or os.path.isdir(args.resume) else runs_root() / args.resume
        run = Run(folder)
        if not (run.folder / "spec.toml").is_file():
            raise DistillscopeError(f"'{args.resume}' is not a run folder.", "Pass the folder `distillscope runs` lists.")
        run.spec  # a clear error now if the spec no longer reads
    else:
        spec = JobSpec.from_toml_file(args.spec)
        run = _shared_run(lambda: Run.create(spec), world)
    return _execute_with_bar(run, world)


def _init_distributed() -> int:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPU, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch
        import torch.distributed as dist

        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return world


def _shared_run(make, world: int):
    """Rank 0 creates the run folder; the others learn its path."""
    from core.jobs import Run

    if world == 1:
        return make()
    import torch.distributed as dist

    box = [str(make().folder) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return Run(box[0])


def _execute_with_bar(run, world: int) -> int:
    import signal

    from core.jobs import JobContext, execute

    rank = 0
    if world > 1:
        import torch.distributed as dist
        rank = dist.get_rank()
    bar, update = _progress_bar(unit="it") if rank == 0 else (None, None)
    on_event = (lambda kind, _id, p: update(p["done"], p["total"], p["message"]) if kind == "progress" else None)
    ctx = JobContext(run, on_event if bar else None, main=rank == 0)
    previous = signal.signal(signal.SIGINT, lambda *_: ctx.cancel())  # first Ctrl-C: checkpoint, stop
    try:
        final = execute(run, ctx)
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar:
            bar.close()
        if world > 1:
            import torch.distributed as dist
            dist.destroy_process_group()
    if rank == 0:
        status = run.status()
        print(f"{final}: {status.get('message', '')}", file=sys.stderr)
        for key, value in (status.get("evaluation") or {}).items():
            print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
        print(f"run folder: {run.folder}")
    return {"done": 0, "cancelled": 130}.get(final, 1)


def cmd_runs(args) -> int:
    from core.jobs import list_runs, runs_root

    runs = list_runs()
    if not runs:
        print(f"no runs in {runs_root()}")
    for run in runs:
        status = run.status()
        print(f"{run.effective_state(status):<11} step {status.get('step', 0):>7,}  {run.id}")
    return 0


def _add_features(sub) -> None:
    p = sub.add_parser("features", help="a document's top dictionary features, with labels and scores",
                       description="Score a document against a sparse dictionary (SAE) and print its "
                                   "top features. 'projection' (default) is the seed-000 bridge: the "
                                   "document's mean-pooled residual, z-normalized against the "
                                   "dictionary's reference, projected onto unit decoder directions "
                                   "(signed). 'tokens' encodes every token and reports the mean "
                                   "activation over the document (and the peak).")
    p.add_argument("file", help="a text file (a .jsonl/.csv/.tsv file or a folder scores every "
                                "document in it), or '-' for standard input")
    p.add_argument("--dictionary", metavar="DIR", default=None,
                   help="SAE folder (cfg.json + sae_weights.safetensors); default: the starter "
                        "dictionary for the bundled teacher")
    p.add_argument("--model", default="bundled",
                   help="the teacher ('teacher' or 'bundled', a Hugging Face folder or a .gguf file), or "
                        "a distilled student: 'student' (the newest finished student run) or a student "
                        "folder; a student's predicted document vector is projected (--method projection)")
    p.add_argument("--method", default="projection", choices=["projection", "tokens"])
    p.add_argument("--top", type=int, default=20, help="features to show (default 20)")
    p.add_argument("--by", default="abs", choices=["abs", "value", "peak"],
                   help="rank by |score| (default), by score, or by peak activation (tokens)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--reference-corpus", nargs="+", metavar="CORPUS", default=None,
                   help="when the dictionary ships no reference.safetensors: compute the "
                        "z-normalization reference from this corpus ('demo' or files)")
    p.add_argument("--max-length", type=int, default=2048, help="tokens per document (default 2048, as the app)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")


def _add_label(sub) -> None:
    p = sub.add_parser("label", help="write automatic feature labels and a projection reference "
                                     "into a dictionary folder",
                       description="Build the feature index of a dictionary over a token cache, "
                                   "label every feature from its top-activating tokens (labels you "
                                   "edited are kept) and write labels.json and reference.safetensors "
                                   "(mean/std of the corpus's document vectors) into the folder.")
    p.add_argument("dictionary", help="SAE folder (cfg.json + sae_weights.safetensors)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--cache", metavar="FOLDER", help="a token activation cache at the dictionary's hook")
    source.add_argument("--corpus", nargs="+", metavar="CORPUS",
                        help="'demo' or files/folders: extracted once (tokens mode) into the user cache")
    p.add_argument("--model", default="bundled", help="the teacher (its tokenizer names the tokens)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per document when extracting")
    p.add_argument("--top-k", type=int, default=20, help="top activating rows kept per feature")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a dictionary in the SAELens layout (optionally float16)",
                       description="Copy a dictionary (a run folder, its artifacts/sae, any SAELens "
                                   "folder or Gemma Scope params file) to OUT as cfg.json + "
                                   "sae_weights.safetensors, which sae-lens loads too.")
    p.add_argument("source", help="a run folder, an SAE folder, or a params.npz/.safetensors file")
    p.add_argument("out", help="the folder to write (must not exist or be empty)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="weight dtype on disk (default: the dictionary's own)")
    p.add_argument("--hook", default=None, help="hook of a params file, e.g. resid_post.6")


def cmd_export(args) -> int:
    from pathlib import Path

    import torch

    from core.dictionaries import load

    source, out = Path(args.source), Path(args.out)
    if (source / "artifacts" / "sae" / "cfg.json").is_file():
        source = source / "artifacts" / "sae"  # a run folder: its final dictionary
    if out.exists() and any(out.iterdir()):
        raise DistillscopeError(f"'{out}' exists and is not empty.", "Choose a new folder.")
    sae = load(source, hook=args.hook)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.dtype)
    sae.save(out, dtype=dtype)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out}: {sae.cfg.architecture}, {sae.d_in} -> {sae.d_sae:,} features, "
          f"{args.dtype or 'own dtype'}, {size / 1e6:.2f} MB")
    return 0


def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="write z-normalized document vectors of a corpus (teacher or student)",
                       description="Mean-pooled residual vectors of every document at one hook, "
                                   "z-normalized (seed 000), into a safetensors file: 'vectors' "
                                   "[N, d_model] float32, document ids in its metadata and in a "
                                   "JSON sidecar (OUT with .json). With a student folder the "
                                   "teacher is not loaded and the vectors are in the student's "
                                   "z-space (its reference); with the teacher they are "
                                   "z-normalized against the corpus's own mean and std.")
    p.add_argument("corpus", nargs="+", help=f"a demo set ({DEMO_NAMES}), or files/folders (.txt .md .jsonl .csv .tsv)")
    p.add_argument("-o", "--out", required=True, help="the .safetensors file to write")
    p.add_argument("--model", default="teacher",
                   help="'teacher' (default) or a student folder (a run folder or its artifacts/student)")
    p.add_argument("--teacher", default="bundled", help="the teacher when --model teacher: 'bundled', "
                                                        "a Hugging Face folder or a .gguf file")
    p.add_argument("--hook", default=None, help="hook point, e.g. resid_post.6 (default: the "
                                                "student's own, or resid_post.6 for the teacher)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per document (default 256)")
    p.add_argument("--batch-size", type=int, default=64, help="documents per student batch")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")


def cmd_embed(args) -> int:
    import json
    from pathlib import Path

    from safetensors.torch import save

    from core.paths import atomic_write_bytes, atomic_write_text
    from core.progress import TaskState

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise DistillscopeError(f"'{out}' does not end in .safetensors.", "e.g. -o vecs.safetensors")
    if out.is_dir():
        raise DistillscopeError(f"'{out}' is a folder.", "Give a file name, e.g. -o vecs.safetensors")
    if args.max_length < 2 or args.batch_size < 1:
        raise DistillscopeError("--max-length must be at least 2 and --batch-size at least 1.", "")
    documents = _read_corpus(args.corpus).documents
    bar, update = _progress_bar()
    state = TaskState(update)
    start = time.monotonic()
    try:
        if args.model == "teacher":
            vectors, meta = _embed_teacher(args, documents, state)
        else:
            vectors, meta = _embed_student(args, documents, state)
    finally:
        bar.close()
    ids = [d.id for d in documents]
    meta.update({"format": "distillscope-embeddings/1", "n_documents": str(len(ids)),
                 "ids": json.dumps(ids, ensure_ascii=False)})
    atomic_write_bytes(out, save({"vectors": vectors.float().contiguous()}, metadata=meta))
    sidecar = out.with_suffix(".json")
    atomic_write_text(sidecar, json.dumps({**{k: v for k, v in meta.items() if k != "ids"}, "ids": ids,
                                           "labels": [getattr(d, "label", None) for d in documents]},
                                          indent=1, ensure_ascii=False))
    print(f"wrote {len(ids):,} vectors of width {vectors.shape[1]} ({meta['model']}, {meta['hook']}, "
          f"{meta['normalization']}) to {out} and the ids to {sidecar} in {time.monotonic() - start:.1f} s")
    return 0


def _embed_teacher(args, documents, state):
    from core.activations import ExtractSettings, extract
    from core.inspect import auto_cache_folder
    from core.models import load_teacher
    from core.similarity import zscore

    settings = ExtractSettings(hook=args.hook or "resid_post.6", mode="pooled", max_length=args.max_length)
    try:
        hook = settings.validate()
    except ValueError as exc:
        raise DistillscopeError(str(exc), "e.g. --hook resid_post.6")
    teacher = load_teacher(args.teacher, device=args.device, state=state)
    try:
        teacher.check_hook(hook)
    except ValueError as exc:
        raise DistillscopeError(str(exc), "Choose a layer the model has.")
    cache = extract(teacher, documents, auto_cache_folder(teacher, documents, settings), settings, state)
    where = {d: i for i, d in enumerate(cache.document_ids)}
    raw = cache.pooled()[[where[d.id] for d in documents]]
    mean, std = cache.stats()
    return zscore(raw, mean, std), {"model": teacher.name, "hook": hook.name,
                                    "normalization": "z-score against this corpus"}


def _embed_student(args, documents, state):
    from core.student import Student, is_student_folder

    if not is_student_folder(args.model):
        raise DistillscopeError(f"'{args.model}' is neither 'teacher' nor a student folder.",
                                "Pass --model teacher, or a folder a student job wrote "
                                "(RUN or RUN/artifacts/student).")
    student = Student.load(args.model, device=args.device or "cpu")
    if args.hook and args.hook != student.hook:
        raise DistillscopeError(f"The student was trained at {student.hook}, not {args.hook}.",
                                f"Leave out --hook or pass --hook {student.hook}.")
    vectors = student.vectors([d.text for d in documents], state, args.batch_size,
                              max_length=args.max_length)
    return vectors, {"model": student.name, "hook": student.hook,
                     "normalization": f"z-score against the student's reference ({student.reference.source})"}


def _read_corpus(inputs: list[str]):
    from core.documents import load_corpus

    corpus = load_corpus(inputs)
    for problem in corpus.problems[:20]:
        print(f"warning: {problem}", file=sys.stderr)
    if not corpus.documents:
        raise DistillscopeError(f"No readable documents in {', '.join(inputs)}.", "See the warnings above.")
    return corpus


def _read_file(file: str, verb: str):
    """The corpus a FILE argument names: a text file, a .jsonl/.csv/.tsv file or a folder, or
    '-' for standard input; warnings printed, an error when nothing is left to `verb`."""
    from core.documents import from_text, load_path

    corpus = from_text(sys.stdin.read(), id="stdin") if file == "-" else load_path(file)
    for problem in corpus.problems[:20]:
        print(f"warning: {problem}", file=sys.stderr)
    if not corpus.documents:
        raise DistillscopeError(f"No text to {verb} in {file}.", "See the warnings above.")
    return corpus


def _open_dictionary(folder: Optional[str]):
    from pathlib import Path

    from core.dictionaries import load
    from core.features import STARTER_DICTIONARY

    if folder is None:
        if not (STARTER_DICTIONARY / "cfg.json").is_file():
            raise DistillscopeError(f"The starter dictionary is not installed ({STARTER_DICTIONARY} "
                                    "holds no cfg.json).", "Pass --dictionary DIR: a folder with "
                                    "cfg.json and sae_weights.safetensors (SAELens layout).")
        folder = STARTER_DICTIONARY
    return Path(folder), load(folder)


def _token_reference(teacher, sae, inputs: list[str], state):
    """Mean/std of a corpus's pooled document vectors at the dictionary's hook."""
    from core.activations import ExtractSettings, extract
    from core.features.scoring import reference_from_cache, sae_hook
    from core.inspect import auto_cache_folder

    documents = _read_corpus(inputs).documents
    settings = ExtractSettings(hook=sae_hook(sae, teacher).name, mode="pooled", max_length=256)
    cache = extract(teacher, documents, auto_cache_folder(teacher, documents, settings), settings, state)
    return reference_from_cache(cache)


def cmd_features(args) -> int:
    import json

    from core.features import document_scores, load_labels, load_reference
    from core.features.scoring import sae_hook
    from core.models import load_teacher
    from core.progress import TaskState

    if args.top < 1:
        raise DistillscopeError("--top must be at least 1.", "e.g. --top 20")
    if args.by == "peak" and args.method != "tokens":
        raise DistillscopeError("--by peak needs token scores.", "Add --method tokens.")
    folder, sae = _open_dictionary(args.dictionary)
    student = _student_model(args.model)
    if student is not None and args.method != "projection":
        raise DistillscopeError("A student predicts document vectors, not token activations.",
                                "Use --method projection with a student.")
    corpus = _read_file(args.file, "score")
    reference = load_reference(folder) if args.method == "projection" else None
    bar, update = _progress_bar()
    state = TaskState(update)
    try:
        if student is not None:
            results, hook = _student_scores(student, sae, folder, reference, corpus.documents, state)
            args.model = student.name
        else:
            teacher = load_teacher("bundled" if args.model == "teacher" else args.model, device=args.device,
                                   state=state)
            hook = sae_hook(sae, teacher)
            sae.to(teacher.device)
        if student is None and args.method == "projection" and reference is None:
            if not args.reference_corpus:
                raise DistillscopeError(
                    f"Projection scores need a reference (mean and std of document vectors to "
                    f"z-normalize against), and '{folder}' has no reference.safetensors.",
                    f"Run `distillscope label {folder} --corpus demo` to write one, pass "
                    "--reference-corpus demo, or use --method tokens.")
            reference = _token_reference(teacher, sae, args.reference_corpus, state)
        if student is None:
            results = []
            for i, document in enumerate(corpus.documents):
                state.report(i, len(corpus.documents), "Scoring")
                doc, scores = document_scores(teacher, sae, document.text, reference, args.method,
                                              args.max_length, state)
                results.append((document, doc, scores))
        state.report(len(corpus.documents), len(corpus.documents), "Scored")
    finally:
        bar.close()
    labels = load_labels(folder)
    out = {"dictionary": str(folder), "hook": hook.name, "method": args.method,
           "model": args.model if student is not None else "teacher",
           "reference": reference.source if reference is not None else None, "documents": []}
    for document, doc, scores in results:
        rows = []
        for rank, f in enumerate(scores.top(args.top, args.by), 1):
            row = {"rank": rank, "feature": f, "score": float(scores.values[f]), "label": labels.get(f)}
            if scores.peak is not None:
                row["peak"] = float(scores.peak[f])
            rows.append(row)
        out["documents"].append({"id": document.id, "source": document.source,
                                 "n_tokens": sum(not b for b in doc.is_bos), "features": rows})
    if args.json:
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return 0
    what = {"projection": "projection of the z-normalized mean residual onto unit decoder directions",
            "tokens": "mean activation over the tokens"}[args.method]
    print(f"dictionary {folder} at {hook.name}; score: {what}"
          + (f"; vectors from {args.model}" if student is not None else ""))
    if reference is not None:
        print(f"reference: {reference.source}")
    for entry in out["documents"]:
        print(f"\n{entry['id']} ({entry['n_tokens']:,} tokens)")
        peak = args.method == "tokens"
        print(f"{'rank':>4} {'feature':>8} {'score':>9}" + (f" {'peak':>9}" if peak else "") + "  label")
        for row in entry["features"]:
            print(f"{row['rank']:>4} {row['feature']:>8} {row['score']:>+9.3f}"
                  + (f" {row['peak']:>9.3f}" if peak else "") + f"  {row['label']}")
    return 0


def _student_model(model: str):
    """The Student that --model names ('student': the newest finished student run; a student
    folder), or None when it names a teacher."""
    from pathlib import Path

    from core.student import Student, is_student_folder

    if model == "student":
        from core.jobs import list_runs

        done = [r for r in list_runs() if r.status().get("state") == "done"
                and is_student_folder(r.folder / "artifacts" / "student")]  # only student runs write one
        if not done:
            raise DistillscopeError("No finished student run was found.",
                                    "Train one (distillscope train examples/student-demo.toml, or the "
                                    "wizard's Student method), or pass --model STUDENT_FOLDER.")
        newest = max(done, key=lambda r: r.folder.name)
        return Student.load(newest.folder / "artifacts" / "student")
    if Path(model).is_dir() and is_student_folder(model):
        return Student.load(model)
    return None


def _student_scores(student, sae, folder, reference, documents, state):
    """(results as cmd_features prints them, hook): each document's student vector (in the
    teacher's units) projected like the teacher's, against the dictionary's reference."""
    from types import SimpleNamespace

    from core.features import projection_scores
    from core.models import HookPoint
    from core.student.evaluation import check_dictionary

    hook = HookPoint.parse(student.hook)
    check_dictionary(student, sae)
    if reference is None:
        raise DistillscopeError(f"'{folder}' has no reference.safetensors to z-normalize against.",
                                f"Run `distillscope label {folder} --corpus demo` first.")
    raw = student.vectors([d.text for d in documents], state, raw=True)
    results = []
    for document, vector in zip(documents, raw):
        n = len(student.tokenize([document.text])[0])
        doc = SimpleNamespace(is_bos=[True] + [False] * (n - 1))
        results.append((document, doc, projection_scores(vector, sae, reference.mean, reference.std)))
    return results, hook


def cmd_label(args) -> int:
    from pathlib import Path

    from core.activations import ActivationCache, ExtractSettings, extract
    from core.dictionaries import load
    from core.features import index_for, label_all, load_labels, reference_from_cache, save_reference
    from core.features.scoring import sae_hook
    from core.inspect import auto_cache_folder
    from core.models import load_teacher
    from core.progress import TaskState

    folder = Path(args.dictionary)
    sae = load(folder)
    labels = load_labels(folder)  # a damaged labels.json stops us before any long work
    bar, update = _progress_bar()
    state = TaskState(update)
    start = time.monotonic()
    try:
        teacher = load_teacher(args.model, device=args.device, state=state)
        hook = sae_hook(sae, teacher)
        if args.cache:
            cache = ActivationCache(args.cache)
            if cache.manifest["key"]["model"].get("fingerprint") != teacher.fingerprint:
                print(f"warning: the cache was extracted from {cache.manifest['key']['model']['name']}, "
                      f"not {teacher.name}: token strings in the labels may be wrong.", file=sys.stderr)
        else:
            documents = _read_corpus(args.corpus).documents
            settings = ExtractSettings(hook=hook.name, mode="tokens", max_length=args.max_length)
            cache = extract(teacher, documents, auto_cache_folder(teacher, documents, settings), settings, state)
        sae.to(teacher.device)
        index = index_for(sae, cache, state, top_k=args.top_k)
        label_all(index, sae, teacher.token_strings, labels)
        reference = reference_from_cache(cache)
    finally:
        bar.close()
    labels.save(folder)
    save_reference(folder, reference)
    dead = int(index.dead().sum())
    users = sum(1 for f in labels if labels.is_user(f))
    print(f"labelled {sum(1 for f in labels if labels.is_auto(f)):,} of {sae.d_sae:,} features "
          f"({dead:,} never fire on the {index.n_tokens:,} cached tokens; {users:,} labels of yours kept)")
    print(f"wrote {folder / 'labels.json'} and {folder / 'reference.safetensors'} "
          f"(reference: {reference.source}) in {time.monotonic() - start:.1f} s")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("--") and argv[0] not in ("--help", "--version"):
        from gui.app import main as gui_main  # only the GUI path imports Qt
        return gui_main(argv)
    parser = argparse.ArgumentParser(
        prog="distillscope",
        description="Distillation-based interpretability workbench. Without a subcommand the "
                    "desktop app opens (options: --model, --corpus, --layer).")
    parser.add_argument("--version", action="version", version="distillscope 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_extract(sub)
    _add_train(sub)
    _add_runs(sub)
    _add_features(sub)
    _add_label(sub)
    _add_export(sub)
    _add_embed(sub)
    from core.student.cli import add_parsers as add_student_parsers
    from core.steering_cli import add_parsers as add_steering_parsers

    student_commands = add_student_parsers(sub)
    student_commands.update(add_steering_parsers(sub))
    from core.crosscoder.cli import add_parsers as add_crosscoder_parsers
    student_commands.update(add_crosscoder_parsers(sub))
    args = parser.parse_args(argv)
    try:
        return {"extract": cmd_extract, "train": cmd_train, "runs": cmd_runs, "features": cmd_features,
                "label": cmd_label, "export": cmd_export, "embed": cmd_embed,
                **student_commands}[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished shards are kept; run the same command again to resume.",
              file=sys.stderr)
        return 130
    except DistillscopeError as exc:
        print(f"error: {exc.what}", file=sys.stderr)
        if exc.hint:
            print(f"  {exc.hint}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
