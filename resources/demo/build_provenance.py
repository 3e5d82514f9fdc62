#!/usr/bin/env python3
"""Build the RAID-style provenance demo set: human fortunes beside machine continuations.

    DISTILLSCOPE_MODEL_CACHE=.test-cache/models .venv/bin/python resources/demo/build_provenance.py

For each chosen human text of fortunes.jsonl the bundled teacher (Gemma 3 270M base) is given
the text's first PROMPT_WORDS words and samples a continuation of about the same length. Both
documents go to provenance.jsonl (fields id, text, label "human"/"machine", pair, prompt), the
settings and the measured time to provenance.settings.json.

Both sides are cleaned the same way, so the contrast has to come from the wording and not from
the layout: the attribution line of a fortune ("\t\t-- Author") is dropped (a sampled
continuation almost never ends with one) and all whitespace is collapsed to single spaces (the
fortunes are hard-wrapped at 72 columns, the model's text is not).

Sampling (core.generate.sample_batches) is seeded per batch; the batches are fixed (sorted by
length), so the same torch, transformers and CPU give the same file. Other hardware may round
differently and sample other tokens: the committed file, not a rebuild, is the reference.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run from anywhere: the repository's core/

SOURCE = HERE / "fortunes.jsonl"
OUT = HERE / "provenance.jsonl"

SEED = 20240607
MIN_WORDS, MAX_WORDS = 25, 120  # of the cleaned human text
N_PAIRS = 300
PROMPT_WORDS = 7
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": 50}
TOKENS_PER_WORD = 1.6  # room for max_new_tokens: English runs about 1.3 Gemma tokens a word
BATCH = 32
# One thread by default: on a 2-core machine that is also running something else, two OpenMP
# threads fighting for one free core made each step 5x slower (2.2 s against 0.4 s).
THREADS = 1

# An attribution: a line indented by blanks that starts with "--" ("\t\t-- Mark Twain").
ATTRIBUTION = re.compile(r"\n[ \t]+--")


def clean(text: str) -> str:
    """The human text without its attribution, on one line."""
    cut = ATTRIBUTION.search(text)
    if cut:
        text = text[:cut.start()]
    return " ".join(text.split())


def trim(continuation: str, n_words: int) -> str:
    """Cut the sampled text to n_words words, then back to the last sentence end if there is
    one in the second half (a text that stops mid-sentence would be an easy tell)."""
    words = continuation.split()[:n_words]
    text = " ".join(words)
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]?(?=\s|$)", text)]
    if ends and ends[-1] >= len(text) // 2:
        text = text[:ends[-1]]
    return text.strip()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def choose(n_pairs: int = N_PAIRS, source: Path = SOURCE, exclude: frozenset = frozenset(),
           skip_ids: frozenset = frozenset()) -> list[dict]:
    """n_pairs human texts of `source` (cleaned, MIN_WORDS to MAX_WORDS long), none in `exclude`
    and none whose id is in `skip_ids`."""
    pool = []
    for row in read_jsonl(source):
        text = clean(row["text"])
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS and text not in exclude and row["id"] not in skip_ids:
            pool.append({"source": row["id"], "topic": row["label"], "text": text})
    picked = sorted(random.Random(SEED).sample(range(len(pool)), min(n_pairs, len(pool))))
    return [pool[i] for i in picked]


def main(argv=None) -> int:
    import argparse
    import torch
    from core.generate import Sampling, sample_batches
    from core.models import cpu_has_amx, load_teacher

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=THREADS, help="torch CPU threads (default %(default)s)")
    parser.add_argument("--pairs", type=int, default=N_PAIRS, help="human texts to continue (default %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="output .jsonl (settings beside it)")
    parser.add_argument("--source", type=Path, default=SOURCE, help="human texts (.jsonl, default %(default)s)")
    parser.add_argument("--machine-only", action="store_true",
                        help="write only the continuations (ids machine-NNNNN), of texts that are not "
                             "in provenance.jsonl: machine text for a training corpus")
    parser.add_argument("--skip-sources", type=Path, action="append", default=[],
                        help="a machine-only .jsonl made before: its sources are not continued again "
                             "and ids go on after its (repeatable), so a second file holds other texts")
    args = parser.parse_args(argv)
    out_path = args.out
    settings_path = out_path.with_name(out_path.stem + ".settings.json")
    torch.set_num_threads(args.threads)
    exclude = frozenset(r["text"] for r in read_jsonl(OUT) if r["label"] == "human") if args.machine_only else frozenset()
    skip = frozenset(r["source"] for path in args.skip_sources for r in read_jsonl(path))
    chosen = choose(args.pairs, args.source, exclude, skip)
    teacher = load_teacher("bundled", device="cpu")
    teacher.model.eval()

    for item in chosen:
        words = item["text"].split()
        item["prompt"] = " ".join(words[:PROMPT_WORDS])
        item["n_words"] = len(words)
    # Similar lengths share a batch, so few sequences idle while the longest finishes.
    order = sorted(range(len(chosen)), key=lambda i: (chosen[i]["n_words"], i))
    ordered = [chosen[i] for i in order]
    # A batch samples up to its longest text's budget: ceil(1.6 * (words - prompt words)) + 4.
    budgets = [math.ceil((item["n_words"] - PROMPT_WORDS) * TOKENS_PER_WORD) + 4 for item in ordered]
    start = time.perf_counter()
    generated_tokens = 0
    for batch in sample_batches(teacher, [item["prompt"] for item in ordered], budgets, seed=SEED,
                                batch_size=BATCH, sampling=Sampling(**SAMPLING), fast=True):
        for i, ids in zip(batch.indices, batch.new_ids):
            item = ordered[i]
            generated_tokens += len(ids)
            cont = teacher.tokenizer.decode(ids, skip_special_tokens=True)
            item["machine"] = (item["prompt"] + " " + trim(cont, item["n_words"] - PROMPT_WORDS)).strip()
        print(f"{batch.indices.stop}/{len(order)} pairs, {time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - start

    lines = []
    for n, item in enumerate(chosen if args.machine_only else []):
        lines.append({"id": f"machine-{n + len(skip):05d}", "text": item["machine"], "label": "machine",
                      "prompt": item["prompt"], "source": item["source"], "topic": item["topic"]})
    for n, item in enumerate([] if args.machine_only else chosen):
        pair = f"pair-{n:04d}"
        common = {"pair": pair, "prompt": item["prompt"], "source": item["source"], "topic": item["topic"]}
        lines.append({"id": f"{pair}-human", "text": item["text"], "label": "human", **common})
        lines.append({"id": f"{pair}-machine", "text": item["machine"], "label": "machine", **common})
    tmp = out_path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in lines)
    tmp.replace(out_path)

    settings = {
        "command": "DISTILLSCOPE_MODEL_CACHE=.test-cache/models .venv/bin/python resources/demo/build_provenance.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "teacher": teacher.name, "teacher_fingerprint": teacher.fingerprint,
        "source": args.source.name, "seed": SEED, "pairs": len(chosen), "machine_only": args.machine_only,
        "skip_sources": [path.name for path in args.skip_sources],
        "human_words": [MIN_WORDS, MAX_WORDS], "prompt_words": PROMPT_WORDS, "sampling": SAMPLING,
        "max_new_tokens": f"ceil({TOKENS_PER_WORD} * (human words - prompt words)) + 4",
        "batch": BATCH, "padding_side": "left", "threads": args.threads,
        "banned_tokens": "added special tokens but EOS, [multimodal], <start_of_image>, <end_of_image>",
        "sampling_order": "top-k, temperature, top-p",
        "precision": "bfloat16 autocast (AMX CPU)" if cpu_has_amx() else "float32",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "generated_tokens": generated_tokens, "seconds": round(seconds, 1),
    }
    settings_path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    print(f"{len(lines)} documents, {generated_tokens} tokens sampled in {seconds:.0f} s "
          f"({out_path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
