"""`distillscope crosscoder report|ablate|reasoning|geometry`: the analyses of issue 6 from the
command line. Human-readable by default, `--json` for machines. Registered by core.cli."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

from core.errors import DistillscopeError

SUBCOMMANDS = ("report", "ablate", "reasoning", "geometry")


def add_parsers(sub) -> dict:
    p = sub.add_parser("crosscoder", help="analyse a crosscoder of a base model and its variant",
                       description="Analyses of a crosscoder trained on a base model and its "
                                   "distilled or fine-tuned variant (seed 003): latent classes by "
                                   "relative decoder norm, ablation of a latent set inside both "
                                   "models, reasoning-category tags, and the parallelogram test of "
                                   "the models' representations.")
    cs = p.add_subparsers(dest="crosscoder_command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")

    r = cs.add_parser("report", help="latent classes, histograms and top latents of a crosscoder",
                      description="Relative decoder norm per latent (variant norm over the sum of "
                                  "both), latent classes, the relative-norm and decoder-cosine "
                                  "histograms, and the latents with the largest decoders per class.")
    r.add_argument("crosscoder", help="a crosscoder folder (cfg.json + crosscoder_weights.safetensors)")
    r.add_argument("--top", type=int, default=5, help="latents listed per class (default 5)")
    r.add_argument("--bins", type=int, default=10, help="histogram bins (default 10)")
    r.add_argument("--json", action="store_true", help="print JSON instead of text")

    a = cs.add_parser("ablate", help="remove a latent set from both models' residuals; change in logits and loss",
                      description="Seed 003's figure 2: the crosscoder's latent activations on the "
                                  "texts, a set of latents' decoded contribution subtracted from each "
                                  "model's residual at the crosscoder's hook (all tokens but BOS), and "
                                  "per token the mean |logit change|, the KL of the next-token "
                                  "distributions and the change in next-token loss, against a "
                                  "random set of latents with matching firing frequencies.")
    a.add_argument("crosscoder", help="a crosscoder folder")
    _model_args(a)
    a.add_argument("--set", dest="latent_set", default="variant-only",
                   help="latents to ablate: a class (variant-only, base-only, shared, variant-leaning, "
                        "base-leaning), a cut such as rel>0.5 (the seed's figure 2a), or "
                        "latents:3,17,42 (default variant-only)")
    a.add_argument("--corpus", nargs="+", default=None,
                   help="texts to run (files, folders or a demo set name; default: the bundled "
                        "reasoning prompt sets)")
    a.add_argument("--max-docs", type=int, default=200, help="use at most this many documents (default 200)")
    a.add_argument("--max-length", type=int, default=64, help="tokens per document (default 64)")
    a.add_argument("--batch-size", type=int, default=4, help="documents per forward pass (default 4)")
    a.add_argument("--no-random", action="store_true",
                   help="skip the baseline of a random latent set with matching firing frequencies")
    a.add_argument("--top-frequency", default="", metavar="K,K,...",
                   help="also ablate the K%% most frequently firing latents (figure 2b; the seed "
                        "uses 0.5,1,2,5,10,20)")
    a.add_argument("--in", dest="ablate_in", choices=("both", "base", "variant"), default="both",
                   help="which model's residual to ablate (default both; by the crosscoder's order)")
    a.add_argument("--seed", type=int, default=0, help="seed of the random baseline (default 0)")
    a.add_argument("--bins", type=int, default=10, help="histogram bins (default 10)")
    a.add_argument("--json", action="store_true", help="print JSON instead of text")

    q = cs.add_parser("reasoning", help="tag latents by the reasoning category they fire on",
                      description="Runs prompt sets of self-reflection, deductive, alternative and "
                                  "contrastive reasoning and a neutral control set through both "
                                  "models; a latent is tagged with a category when its mean "
                                  "per-text peak activation there is at least --ratio times that on "
                                  "every other set and it fires in at least --min-fraction of the "
                                  "category's texts.")
    q.add_argument("crosscoder", help="a crosscoder folder")
    _model_args(q)
    q.add_argument("--prompts", nargs="+", default=None, metavar="FILE",
                   help="prompt files (.jsonl/.csv/.tsv with 'text' and 'category'; a 'control' set "
                        "is required; default: the bundled sets)")
    q.add_argument("--ratio", type=float, default=2.0, help="specificity ratio (default 2)")
    q.add_argument("--min-fraction", type=float, default=0.25,
                   help="fraction of a category's texts the latent must fire in (default 0.25)")
    q.add_argument("--top", type=int, default=5, help="latents listed per category (default 5)")
    q.add_argument("--max-length", type=int, default=64, help="tokens per text (default 64)")
    q.add_argument("--batch-size", type=int, default=8, help="texts per forward pass (default 8)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")

    g = cs.add_parser("geometry", help="parallelogram test of analogy quadruples, base vs variant",
                      description="Seed 003's figures 4-5: each word's residual at the hook (last "
                                  "token of the word after BOS and a space), the parallelogram loss "
                                  "||(b-a)-(d-c)|| / mean(||b-a||, ||d-c||) of every quadruple "
                                  "a:b::c:d in full dimension and after PCA to 2D, and the "
                                  "cumulative fraction of quadruples below each loss, per model "
                                  "and function class.")
    g.add_argument("--base", required=True, help="'bundled', a Hugging Face folder or a .gguf file")
    g.add_argument("--variant", default=None, help="the second model (default: none, one model only)")
    g.add_argument("--quadruples", default=None, metavar="FILE",
                   help=".jsonl/.csv/.tsv with columns a, b, c, d and optionally class (default: "
                        "the bundled set, 168 quadruples in 6 classes)")
    g.add_argument("--hook", default=None, metavar="resid_post.L", help="where to read (default: the middle block)")
    g.add_argument("--template", default=" {word}",
                   help="context the word is read in; must end with {word} (default ' {word}': the "
                        "word after BOS and a space)")
    g.add_argument("--reduce", choices=("last", "mean"), default="last",
                   help="the word's last token or the mean over its tokens (default last)")
    g.add_argument("--pca", choices=("class", "quadruple", "none"), default="class",
                   help="the 2D plane: fitted per function class (default) or per quadruple")
    g.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    g.add_argument("--json", action="store_true", help="print JSON instead of text")
    return {"crosscoder": cmd_crosscoder}


def _model_args(p) -> None:
    p.add_argument("--base", default=None,
                   help="the base model: 'bundled', a Hugging Face folder or a .gguf file (default: "
                        "the source recorded in the crosscoder's cfg.json)")
    p.add_argument("--variant", default=None, help="the variant model (default: as recorded in cfg.json)")
    p.add_argument("--hook", default=None, metavar="resid_post.L",
                   help="only for crosscoders that do not record their hook")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")


def cmd_crosscoder(args) -> int:
    return {"report": cmd_report, "ablate": cmd_ablate, "reasoning": cmd_reasoning,
            "geometry": cmd_geometry}[args.crosscoder_command](args)


# ---------------------------------------------------------------------------------------------
# Helpers


def _positive(value: int, option: str, example: str = "") -> None:
    if value < 1:
        raise DistillscopeError(f"{option} must be at least 1, not {value}.", f"e.g. {option} {example}".strip())


def _open_crosscoder(folder: str):
    from core.crosscoder.model import Crosscoder

    return Crosscoder.load(folder)


def _load_models(sources: list[tuple[str, Optional[str]]], device: Optional[str]) -> list:
    """Load each (role, source) once: the same source twice gives the same Teacher object."""
    from core.models import load_teacher

    loaded: dict[str, object] = {}
    out = []
    for role, source in sources:
        key = "bundled" if source in (None, "bundled") else str(Path(source).expanduser().resolve())
        if key not in loaded:
            print(f"loading {role} model {source} ...", file=sys.stderr, flush=True)
            loaded[key] = load_teacher(source, device=device)
        out.append(loaded[key])
    return out


def _pair_sources(cc, args) -> list[tuple[str, Optional[str]]]:
    out = []
    for i, (role, given) in enumerate((("base", args.base), ("variant", args.variant))):
        recorded = cc.cfg.model_sources[i] if i < len(cc.cfg.model_sources) else ""
        source = given or recorded
        if not source:
            raise DistillscopeError(f"No {role} model given, and the crosscoder does not record where its "
                                    f"'{cc.cfg.model_names[i]}' model came from.",
                                    f"Pass --{role} MODEL ('bundled', a Hugging Face folder or a .gguf file).")
        out.append((cc.cfg.model_names[i], source))
    return out


def _bar(count: int, most: int, width: int = 30) -> str:
    return "#" * (int(round(width * count / most)) if most else 0)


def _text_histogram(h: dict, indent: str = "  ") -> list[str]:
    edges, counts = h["edges"], h["counts"]
    most = max(counts) if counts else 0
    return [f"{indent}{edges[i]:>7.3f} .. {edges[i + 1]:<7.3f} {c:>6,}  {_bar(c, most)}" for i, c in enumerate(counts)]


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, allow_nan=False))


# ---------------------------------------------------------------------------------------------
# report


def cmd_report(args) -> int:
    import torch

    from core.crosscoder.analysis import CLASSES, decoder_norms, histogram, norm_report

    _positive(args.top, "--top", "5")
    _positive(args.bins, "--bins", "10")
    cc = _open_crosscoder(args.crosscoder)
    rep = norm_report(cc, bins=args.bins)
    norms = decoder_norms(cc).sum(-1)
    top = {}
    for c in CLASSES:
        idx = [j for j, k in enumerate(rep["class"]) if k == c]
        idx.sort(key=lambda j: (-float(norms[j]), j))
        top[c] = [{"latent": j, "relative_norm": rep["relative_norm"][j], "cosine": rep["cosine"][j],
                   "decoder_norm": float(norms[j])} for j in idx[:args.top]]
    if args.json:
        _print_json({"crosscoder": str(args.crosscoder), "config": cc.cfg.to_dict(), "counts": rep["counts"],
                     "thresholds": rep["thresholds"], "relative_norm_histogram": rep["relative_norm_histogram"],
                     "cosine_histogram": rep["cosine_histogram"], "top": top,
                     "relative_norm": rep["relative_norm"], "cosine": rep["cosine"], "class": rep["class"]})
        return 0
    cfg = cc.cfg
    print(f"crosscoder {args.crosscoder}: {cfg.architecture}, {cfg.d_latent:,} latents over d_in {cfg.d_in}, "
          f"hook {cfg.hook or '(not recorded)'}, models {rep['base']} / {rep['variant']}")
    print("relative norm = ||d_variant|| / (||d_base|| + ||d_variant||) (normalized space); classes: "
          f"base-only < {rep['thresholds']['base_only_below']}, shared {rep['thresholds']['shared_from']}.."
          f"{rep['thresholds']['shared_to']}, variant-only > {rep['thresholds']['variant_only_above']}")
    print("latents per class: " + ", ".join(f"{c} {rep['counts'][c]:,}" for c in CLASSES))
    print("\nrelative decoder norm (live latents):")
    print("\n".join(_text_histogram(rep["relative_norm_histogram"])))
    shared = [j for j, k in enumerate(rep["class"]) if k == "shared"]
    print(f"\ndecoder cosine base vs variant ({len(shared):,} shared latents):")
    cos = histogram(torch.tensor([rep["cosine"][j] for j in shared], dtype=torch.float64), args.bins, -1.0, 1.0)
    print("\n".join(_text_histogram(cos)))
    print("\nlargest decoders per class (latent: relative norm, cosine, summed decoder norm):")
    for c in CLASSES:
        if top[c]:
            print(f"  {c}: " + "; ".join(f"{t['latent']}: {_fmt(t['relative_norm'], 3)}, {_fmt(t['cosine'], 2)}, "
                                         f"{_fmt(t['decoder_norm'], 3)}" for t in top[c]))
    return 0


# ---------------------------------------------------------------------------------------------
# ablate


def _percentages(text: str) -> list[float]:
    out = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        try:
            k = float(part)
        except ValueError:
            raise DistillscopeError(f"--top-frequency '{text}': '{part}' is not a number.", "e.g. --top-frequency 1,5,20")
        if not 0 < k <= 100:
            raise DistillscopeError(f"--top-frequency: {part} is not a percentage in (0, 100].", "e.g. 1,5,20")
        out.append(k)
    return out


def _ablation_texts(args) -> list[str]:
    if args.corpus:
        from core.cli import _read_corpus

        docs = _read_corpus(args.corpus).documents
        return [d.text for d in docs[: args.max_docs]]
    from core.crosscoder.reasoning import load_prompt_sets

    return [t for texts in load_prompt_sets().values() for t in texts][: args.max_docs]


def cmd_ablate(args) -> int:
    from core.crosscoder.ablation import METRIC_HELP, ablate, parse_latent_set, resolve_hook

    for value, option, example in ((args.max_docs, "--max-docs", "200"), (args.max_length, "--max-length", "64"),
                                   (args.batch_size, "--batch-size", "4"), (args.bins, "--bins", "10")):
        _positive(value, option, example)
    top = _percentages(args.top_frequency)
    cc = _open_crosscoder(args.crosscoder)
    latents = parse_latent_set(args.latent_set, cc)
    if latents.numel() == 0:
        raise DistillscopeError(f"The set '{args.latent_set}' holds no latents in this crosscoder.",
                                "Run `distillscope crosscoder report` to see the classes, or choose another "
                                "set such as rel>0.5.")
    resolve_hook(cc, args.hook)  # before the models load
    texts = _ablation_texts(args)
    models = _load_models(_pair_sources(cc, args), args.device)
    names = cc.model_names
    ablate_in = None if args.ablate_in == "both" else [names[0] if args.ablate_in == "base" else names[1]]
    start = time.monotonic()
    result = ablate(cc, models, texts, {args.latent_set: latents}, baselines=() if args.no_random else ("random-matched",),
                    frequency_top=top, ablate_in=ablate_in, hook=args.hook, max_length=args.max_length,
                    batch_size=args.batch_size, seed=args.seed)
    seconds = time.monotonic() - start
    if args.json:
        data = result.to_json(bins=args.bins)
        data["seconds"] = round(seconds, 2)
        _print_json(data)
        return 0
    print(f"ablation at {result.hook}: {result.n_documents:,} documents, {result.n_tokens:,} scored tokens "
          f"(BOS and each document's last token left out), {seconds:.1f} s")
    for met, text in METRIC_HELP.items():
        print(f"  {met}: {text}")
    header = f"{'set':<34} {'latents':>7} {'model':<10} {'|dlogit| mean':>13} {'doc p90':>9} " \
             f"{'KL mean':>9} {'dloss mean':>10}"
    print("\n" + header)
    for row in result.summary():
        print(f"{row['set'][:34]:<34} {row['n_latents']:>7,} {row['model'][:10]:<10} "
              f"{_fmt(row['mean_abs_logit_change_mean']):>13} {_fmt(row['mean_abs_logit_change_doc_p90']):>9} "
              f"{_fmt(row['kl_mean']):>9} {_fmt(row['loss_change_mean']):>10}")
    for s in list(result.sets)[:2]:
        h = result.histogram(s, "mean_abs_logit_change", bins=args.bins)
        print(f"\nper-document mean |logit change|, set '{s}' (counts per model):")
        edges = h["edges"]
        models_shown = list(h["counts"])
        most = max(max(c) for c in h["counts"].values()) if h["counts"] else 0
        for i in range(len(edges) - 1):
            cells = "  ".join(f"{m} {h['counts'][m][i]:>4} {_bar(h['counts'][m][i], most, 15):<15}" for m in models_shown)
            print(f"  {edges[i]:>9.4g} .. {edges[i + 1]:<9.4g} {cells}")
    return 0


# ---------------------------------------------------------------------------------------------
# reasoning


def cmd_reasoning(args) -> int:
    from core.crosscoder.ablation import resolve_hook
    from core.crosscoder.reasoning import load_prompt_sets, tag_latents

    for value, option, example in ((args.top, "--top", "5"), (args.max_length, "--max-length", "64"),
                                   (args.batch_size, "--batch-size", "8")):
        _positive(value, option, example)
    if not args.ratio > 1 or not math.isfinite(args.ratio):
        raise DistillscopeError(f"--ratio must be a number above 1, not {args.ratio}.", "e.g. --ratio 2")
    if not 0 <= args.min_fraction <= 1:
        raise DistillscopeError(f"--min-fraction must lie in [0, 1], not {args.min_fraction}.", "e.g. 0.25")
    cc = _open_crosscoder(args.crosscoder)
    resolve_hook(cc, args.hook)  # before the models load
    sets = load_prompt_sets(args.prompts)
    models = _load_models(_pair_sources(cc, args), args.device)
    start = time.monotonic()
    tags = tag_latents(cc, models, sets, ratio=args.ratio, min_fraction=args.min_fraction, hook=args.hook,
                       max_length=args.max_length, batch_size=args.batch_size)
    seconds = time.monotonic() - start
    if args.json:
        data = tags.to_json()
        data["seconds"] = round(seconds, 2)
        _print_json(data)
        return 0
    a = tags.activity
    print(f"reasoning tags at {tags.settings.get('hook')}: " +
          ", ".join(f"{n} {k} texts" for n, k in zip(a.names, a.n_texts)) + f"; {seconds:.1f} s")
    print(f"a latent is tagged with a category when its mean per-text peak there is >= {tags.ratio:g} x "
          f"its peak on every other set and it fires in >= {tags.min_fraction:g} of the category's texts; "
          f"'reasoning': >= {tags.ratio:g} x control over the categories together")
    counts = tags.counts()
    classes = ["variant-only", "variant-leaning", "shared", "base-leaning", "base-only", "dead"]
    print(f"\n{'tag':<16} {'latents':>7}  " + " ".join(f"{c:>15}" for c in classes))
    for t in tags.categories + ["reasoning"]:
        d = counts.get(t, {})
        print(f"{t:<16} {d.get('all', 0):>7}  " + " ".join(f"{d.get(c, 0):>15}" for c in classes))
    for t in tags.categories + ["reasoning"]:
        rows = tags.top(t, args.top)
        if not rows:
            continue
        print(f"\nmost specific to {t}:")
        for r in rows:
            own = r.get(f"act_{t}") if t != "reasoning" else None
            spec = "only here" if r["silent_elsewhere"] else f"x{_fmt(r['specificity'], 3)}"
            print(f"  latent {r['latent']:>6}  {spec:>10}  {r.get('class', '-'):<15} rel {_fmt(r.get('relative_norm'), 3):<6}"
                  + (f" peak {_fmt(own, 3)} vs control {_fmt(r[f'act_{tags.control}'], 3)}" if own is not None else
                     f" control {_fmt(r[f'act_{tags.control}'], 3)}"))
    return 0


# ---------------------------------------------------------------------------------------------
# geometry


def cmd_geometry(args) -> int:
    from core.crosscoder.geometry import DEFAULT_THRESHOLDS, geometry, load_quadruples

    quads = load_quadruples(args.quadruples)
    sources = [("base", args.base)] + ([("variant", args.variant)] if args.variant else [])
    loaded = _load_models(sources, args.device)
    models = {role: t for (role, _), t in zip(sources, loaded)}
    start = time.monotonic()
    result = geometry(models, args.hook, quads, template=args.template, reduce=args.reduce, pca=args.pca)
    seconds = time.monotonic() - start
    if args.json:
        data = result.to_json()
        data["seconds"] = round(seconds, 2)
        _print_json(data)
        return 0
    st = result.settings
    print(f"parallelogram test at {st['hook']} ({st['reduce']} token of '{st['template']}'; 2D: PCA per "
          f"{st['pca']}): {len(quads)} quadruples in {len(result.classes)} classes, {seconds:.1f} s")
    print("loss = ||(b - a) - (d - c)|| / ((||b - a|| + ||d - c||) / 2): 0 for a parallelogram, at most 2")
    ths = DEFAULT_THRESHOLDS
    print(f"\n{'class':<14} {'model':<10} {'n':>4} {'median':>7} {'median 2D':>9}   cumulative fraction at loss <= "
          + " ".join(f"{t:g}" for t in ths))
    for row in result.summary(ths):
        fr = " ".join(f"{row['fraction_below'][f'{t:g}']:.2f}" for t in ths)
        print(f"{row['class'][:14]:<14} {row['model'][:10]:<10} {row['n']:>4} {_fmt(row['median'], 3):>7} "
              f"{_fmt(row['median_2d'], 3):>9}   {fr}")
    return 0


__all__ = ["SUBCOMMANDS", "add_parsers", "cmd_crosscoder"]
