"""Benchmark: our extraction against the plain Hugging Face way, same documents, same run.

Plain way: batches of 16 in corpus order padded to the longest, a full forward with
`output_hidden_states=True` (all blocks, final norm and the logits head), then mean-pool
hidden_states[L+1]. A second baseline feeds that same forward our length-bucketed batches, to
show how much of the gain is bucketing and how much is stopping early. Ours: `core.activations.extract` (length bucketing, stop after block L,
streaming shards to disk). Each side runs in its own process so peak memory is its own.

    .venv/bin/python tests/bench/bench_extract.py [--docs 512] [--layer 6] [--model bundled]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(method: str, n_docs: int, layer: int, model: str, max_length: int, out: str) -> None:
    import torch

    from core.activations import ExtractSettings, content_mask, extract, pad_batch, plan_batches
    from core.documents import load_demo
    from core.models import load_teacher

    docs = load_demo().documents[:n_docs]
    teacher = load_teacher(model, device="cpu")
    token_lists = teacher.tokenize([d.text for d in docs], max_length)
    n_tokens = sum(len(t) for t in token_lists)
    loaded = rss_mb()
    start = time.perf_counter()
    if method == "ours":
        with tempfile.TemporaryDirectory() as tmp:
            cache = extract(teacher, docs, tmp, ExtractSettings(hook=f"resid_post.{layer}",
                                                                max_length=max_length))
            vectors = cache.pooled()
    else:
        if method == "hf":
            batches = [list(range(i, min(i + 16, len(docs)))) for i in range(0, len(docs), 16)]
        else:  # the plain forward, but fed our length-bucketed batches
            batches = plan_batches([len(t) for t in token_lists], 4096)
        vectors = torch.zeros(len(docs), teacher.d_model)
        with torch.no_grad():
            for batch in batches:
                ids, mask = pad_batch([token_lists[i] for i in batch], teacher.pad_id)
                out_hf = teacher.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                hidden = out_hf.hidden_states[layer + 1]
                keep = content_mask(ids, mask, teacher.bos_id).unsqueeze(-1)
                vectors[batch] = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(vectors, out + ".pt")
    Path(out).write_text(json.dumps({"seconds": seconds, "tokens": n_tokens, "peak_mb": peak,
                                     "loaded_mb": loaded, "threads": torch.get_num_threads()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=512)
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--model", default="bundled")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--worker", choices=["ours", "hf", "hf-bucketed"])
    p.add_argument("--out")
    a = p.parse_args()
    if a.worker:
        return worker(a.worker, a.docs, a.layer, a.model, a.max_length, a.out)

    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("hf", "hf-bucketed", "ours"):
            out = f"{tmp}/{method}.json"
            subprocess.run([sys.executable, __file__, "--worker", method, "--docs", str(a.docs),
                            "--layer", str(a.layer), "--model", a.model,
                            "--max-length", str(a.max_length), "--out", out], check=True)
            results[method] = json.loads(Path(out).read_text())
            results[method]["vectors"] = torch.load(out + ".pt", weights_only=True)
    hf, bucketed, ours = results["hf"], results["hf-bucketed"], results["ours"]
    diff = (hf["vectors"] - ours["vectors"]).abs().max().item()
    scale = hf["vectors"].abs().max().item()
    print(f"\nExtraction of mean-pooled resid_post.{a.layer}, {a.docs} demo documents, "
          f"{hf['tokens']:,} tokens, model {a.model}, CPU, {hf['threads']} threads\n")
    print("| method | tokens/s | peak RSS (MB) | peak above loaded model (MB) |")
    print("|---|---:|---:|---:|")
    for name, r in (("plain HF (output_hidden_states, logits), batches of 16", hf),
                    ("plain HF forward on our length-bucketed batches", bucketed),
                    ("distillscope extract", ours)):
        print(f"| {name} | {r['tokens'] / r['seconds']:,.0f} | {r['peak_mb']:,.0f} | "
              f"{r['peak_mb'] - r['loaded_mb']:,.0f} |")
    print(f"\nspeed-up over plain HF: {hf['seconds'] / ours['seconds']:.2f}x "
          f"(over the bucketed forward: {bucketed['seconds'] / ours['seconds']:.2f}x);  "
          f"max |difference| of the vectors: {diff:.2e} (largest value {scale:.1f})")


if __name__ == "__main__":
    main()
