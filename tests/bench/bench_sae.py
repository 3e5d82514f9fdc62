"""Benchmark: SAE training throughput and quality, distillscope against SAELens, same run.

    .venv/bin/python tests/bench/bench_sae.py [--d-sae 4096] [--k 32] [--batch 1024]
        [--steps 400] [--lr 4e-4] [--threads 2] [--repeats 1] [--no-saelens-sparse]

Needs the layer-6 token activations of the bundled teacher over the demo corpus:

    DISTILLSCOPE_MODEL_CACHE=.test-cache/models .venv/bin/distillscope extract demo \\
        --out bench-out/demo-l6-tokens --mode tokens --layer 6

and SAELens in its own environment (never in .venv):

    python3 -m venv .bench-venv
    .bench-venv/bin/pip install -f /opt/wheels torch==2.13.0 sae-lens   # torch pinned to the CPU wheel

Same data: every row of that cache in one fixed shuffle (seed), the last --heldout rows held
out, scaled once so training rows have mean squared norm d_in (neither trainer then normalises),
written to one safetensors file both sides read; both draw the same batches in the same order
(sae_bench_common.batch_stream). Same model and training: TopK, d_sae, k, batch, Adam, peak lr,
schedule (linear warm-up, constant, linear decay to zero from 80% of the steps), gradient
clipping at 1, float32, CPU, --threads torch threads, each side in its own fresh process.
Everything else is each library's default (listed in the JSON). Throughput is timed from the
start of step 1 to the end of the fit call (start-up and step 0, which holds the one-time
initialisation, are left out): tokens/s over that wall time, and from the median step. With
--repeats N each side trains N times and its fastest run counts (other load only slows runs).
Quality: both trained SAEs are read by distillscope's loader (SAELens' through its saved
cfg.json + sae_weights.safetensors) and scored by the same function, core.dictionaries.train.
evaluate, on the held-out rows: explained variance, L0, features that never fired.
Prints a markdown table with the ratio ours / theirs (headline: against the faster SAELens
run) and writes bench-out/sae-bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from sae_bench_common import TimedBatches, batch_stream, load_split  # noqa: E402


def make_data(cache_dir: Path, path: Path, heldout: int, seed: int) -> dict:
    """One file of rows both sides read: train [N, d] and heldout [H, d], already scaled."""
    from safetensors.torch import save_file

    from core.activations import ActivationCache

    cache = ActivationCache(cache_dir)
    rows = torch.cat([s["acts"].float() for s in cache.shards()])
    rows = rows[torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed))]
    train, held = rows[:-heldout], rows[-heldout:]
    scale = float((train.shape[1] / train.pow(2).sum(-1).mean()).sqrt())
    meta = {"cache": str(cache_dir), "hook": cache.manifest["hook"],
            "model": cache.manifest["key"]["model"]["name"], "rows": rows.shape[0],
            "train_rows": train.shape[0], "heldout_rows": held.shape[0], "shuffle_seed": seed,
            "scale": scale}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"train": (train * scale).contiguous(), "heldout": (held * scale).contiguous()},
              str(path), metadata={"bench": json.dumps(meta)})
    return meta


def settings(args) -> dict:
    decay_start = 0.8  # distillscope's default; SAELens gets the same number of decay steps
    return {"d_sae": args.d_sae, "k": args.k, "batch": args.batch, "steps": args.steps,
            "lr": args.lr, "warmup_steps": args.warmup_steps, "decay_start": decay_start,
            "decay_steps": args.steps - int(decay_start * args.steps), "threads": args.threads,
            "seed": args.seed}


def run_ours(data: str, out: Path, s: dict) -> None:
    """distillscope side (in its own process): create + train_sae with our defaults."""
    import core
    from core.dictionaries import SAEConfig, create
    from core.dictionaries.train import TrainConfig, train_sae

    torch.set_num_threads(s["threads"])
    train, _, meta = load_split(data)
    cfg = SAEConfig(d_in=train.shape[1], d_sae=s["d_sae"], architecture="topk", k=s["k"])
    sae = create(cfg, seed=s["seed"])
    # Inputs are already scaled (normalize_inputs off, as on SAELens' side). Not set, so
    # defaults: b_dec from the geometric median of the first batch, unit-norm decoder rows,
    # AuxK 1/32 on features dead for 1M tokens, metrics every 50 steps.
    tcfg = TrainConfig(lr=s["lr"], batch_size=s["batch"], total_tokens=s["steps"] * s["batch"],
                       warmup_steps=s["warmup_steps"], decay_start=s["decay_start"],
                       seed=s["seed"], normalize_inputs=False)
    batches = TimedBatches(batch_stream(train, s["batch"], s["steps"], s["seed"]))
    final = train_sae(sae, batches, tcfg)
    timing = batches.timing(time.perf_counter(), s["batch"])
    if final["step"] != s["steps"]:
        raise SystemExit(f"ours took {final['step']} steps, expected {s['steps']}")
    sae.save(out / "sae")
    info = {"method": "distillscope TopK", "distillscope": getattr(core, "__version__", "dev"),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "steps": s["steps"],
            **timing, "dead_fraction_train": final["dead_fraction"],
            "config": {"sae": sae.cfg.to_dict(), "trainer": tcfg.to_dict()}, "data": meta}
    (out / "timing.json").write_text(json.dumps(info, indent=1, default=str))


def evaluate_folder(folder: Path, heldout: torch.Tensor) -> dict:
    """The one scoring function for both sides: our loader, our `evaluate`, held-out rows."""
    from core.dictionaries import load
    from core.dictionaries.train import evaluate

    sae = load(folder)
    ev = evaluate(sae, heldout.split(4096))
    return {"explained_variance": ev["explained_variance"], "l0": ev["l0"],
            "never_fired": ev["dead_fraction"], "mse": ev["mse"], "architecture": sae.cfg.architecture}


def run_side(cmd: list[str], name: str, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "WANDB_MODE": "disabled", "TQDM_DISABLE": "1"}
    print(f"-- {name}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="bench-out/demo-l6-tokens", help="token activation cache")
    ap.add_argument("--out", default="bench-out/sae-bench")
    ap.add_argument("--heldout", type=int, default=4096, help="rows held out for evaluation")
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=4e-4, help="distillscope's default for d_sae 4096")
    ap.add_argument("--warmup-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1,
                    help="time each side this many times and keep its fastest run (busy machines)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--saelens-python", default=".bench-venv/bin/python")
    ap.add_argument("--saelens-sparse", action=argparse.BooleanOptionalAction, default=True,
                    help="also run SAELens with use_sparse_activations (and, as it needs on CPU, "
                    "without decoder-norm rescaling): its faster, non-default setting")
    ap.add_argument("--remake-data", action="store_true")
    ap.add_argument("--side", choices=["ours"], help=argparse.SUPPRESS)  # internal: one side
    ap.add_argument("--side-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    s = settings(args)
    out = ROOT / args.out
    data = out / "acts.safetensors"
    if args.side == "ours":
        return run_ours(str(data), Path(args.side_out), s)

    if args.remake_data or not data.exists():
        print(f"writing {data} from {args.cache}", flush=True)
        make_data(ROOT / args.cache, data, args.heldout, args.seed)
    common = ["--d-sae", str(s["d_sae"]), "--k", str(s["k"]), "--batch", str(s["batch"]),
              "--steps", str(s["steps"]), "--lr", repr(s["lr"]), "--threads", str(s["threads"]),
              "--seed", str(s["seed"])]
    runs = [("saelens", [args.saelens_python, str(HERE / "saelens_side.py"), "--data", str(data),
                         "--warmup-steps", str(s["warmup_steps"]), "--decay-steps", str(s["decay_steps"]),
                         *common])]
    if args.saelens_sparse:
        runs.append(("saelens-sparse", runs[0][1] + ["--sparse-activations"]))
    runs.append(("ours", [sys.executable, __file__, "--side", "ours", "--out", args.out,
                          "--warmup-steps", str(s["warmup_steps"]), *common]))
    load_start = os.getloadavg()[0]
    timings: dict[str, list] = {name: [] for name, _ in runs}
    failed: list[str] = []
    for rep in range(args.repeats):  # interleaved, so drifting load hits every side alike
        for name, cmd in runs:
            if name in failed:
                continue
            side_out = out / name
            side_out.mkdir(parents=True, exist_ok=True)
            (side_out / "timing.json").unlink(missing_ok=True)
            try:  # the same seed each time: the same training, timed again
                run_side(cmd + ["--out" if name != "ours" else "--side-out", str(side_out)],
                         f"{name} ({rep + 1}/{args.repeats})", s["threads"])
            except subprocess.CalledProcessError as exc:
                if name == "ours":
                    raise
                print(f"-- {name} failed (exit {exc.returncode}); left out of the table", flush=True)
                failed.append(name)
                continue
            timings[name].append(json.loads((side_out / "timing.json").read_text()))
            print(f"   {timings[name][-1]['tokens_per_s']:,.0f} tokens/s, load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
    _, heldout, _ = load_split(str(data))
    results = []
    for name, _ in runs:
        if name in failed:
            continue
        # The fastest repeat: other processes on the machine only ever slow a run down.
        info = max(timings[name], key=lambda t: t["tokens_per_s"])
        info["all_tokens_per_s"] = [t["tokens_per_s"] for t in timings[name]]
        info.update(evaluate_folder(out / name / "sae", heldout))
        info["name"] = name
        results.append(info)
    ours = next(r for r in results if r["name"] == "ours")
    theirs = [r for r in results if r["name"] != "ours"]
    if not theirs:
        raise SystemExit("No SAELens run finished; nothing to compare with.")
    best = max(theirs, key=lambda r: r["tokens_per_s"])
    ratio = ours["tokens_per_s"] / best["tokens_per_s"]

    print(f"\nTopK SAE, d_in {ours['config']['sae']['d_in']}, d_sae {s['d_sae']}, k {s['k']}, "
          f"batch {s['batch']}, {s['steps']} steps ({s['steps'] * s['batch']:,} tokens), lr {s['lr']}, "
          f"{s['threads']} threads, {ours['data']['train_rows']:,} training rows, "
          f"{ours['data']['heldout_rows']:,} held out ({ours['data']['hook']}, demo corpus)\n")
    print("| method | tokens/s | tokens/s (median step) | explained variance | L0 | never fired | ours / this (tokens/s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        rel = ours["tokens_per_s"] / r["tokens_per_s"]
        print(f"| {r['method']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s_median_step']:,.0f} | "
              f"{r['explained_variance']:.4f} | {r['l0']:.2f} | {r['never_fired']:.3f} | {rel:.2f}x |")
    print(f"\nthroughput ratio ours / {best['method']} (the faster SAELens run): {ratio:.2f}x; "
          f"explained variance {ours['explained_variance']:.4f} vs {best['explained_variance']:.4f}")
    ratio_median = ours["tokens_per_s_median_step"] / best["tokens_per_s_median_step"]
    print(f"from the median step: {ratio_median:.2f}x")
    for r in theirs:  # the shared evaluation against SAELens' own forward pass
        print(f"{r['method']}: SAELens' own forward gives explained variance "
              f"{r['saelens_own_eval']['explained_variance']:.4f}, L0 {r['saelens_own_eval']['l0']:.2f}")
    print(f"sae-lens {best['sae_lens']}, torch {ours['torch']} (ours) / {best['torch']} (SAELens); "
          f"load average {load_start:.2f} before, {os.getloadavg()[0]:.2f} after")
    if failed:
        print(f"failed runs: {', '.join(failed)}")
    summary = {"settings": s, "ratio_tokens_per_s": ratio, "ratio_median_step": ratio_median,
               "vs": best["method"], "results": results,
               "failed": failed,
               "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                           "loadavg_before": load_start, "loadavg_after": os.getloadavg()[0]}}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
