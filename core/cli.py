"""`distillscope`: no arguments opens the GUI; subcommands run the same work headless."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from core.errors import DistillscopeError


def _progress_bar():
    """A terminal progress bar fed by TaskState callbacks."""
    from tqdm import tqdm

    bar = tqdm(total=1, unit="doc", dynamic_ncols=True, file=sys.stderr)

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
    p.add_argument("inputs", nargs="+", help="files or folders (.txt .md .jsonl .csv .tsv), or 'demo'")
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
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--text-field", default="text", help="JSONL/CSV field holding the text")
    p.add_argument("--label-field", default="label", help="JSONL/CSV field holding the label")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a model folder to run its own Python code (off unless you ask)")


def cmd_extract(args) -> int:
    from core.activations import ExtractSettings, extract
    from core.documents import load_demo, load_paths
    from core.models import load_teacher
    from core.progress import TaskState

    settings = ExtractSettings(hook=f"{args.hook}.{args.layer}", mode=args.mode,
                               max_length=args.max_length, batch_tokens=args.batch_tokens,
                               shard_mb=args.shard_mb, dtype=args.dtype)
    try:
        settings.validate()
    except ValueError as exc:
        raise DistillscopeError(str(exc), "Fix the option and run again.")
    if args.inputs == ["demo"]:
        corpus = load_demo()
    else:
        corpus = load_paths(args.inputs, text_field=args.text_field, label_field=args.label_field)
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
    args = parser.parse_args(argv)
    try:
        return {"extract": cmd_extract}[args.command](args)
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
