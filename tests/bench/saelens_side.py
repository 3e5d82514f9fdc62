"""SAELens side of the SAE training benchmark; runs inside the separate benchmark venv.

    .bench-venv/bin/python tests/bench/saelens_side.py --data ACTS --out FOLDER [settings]

bench_sae.py starts this with the same settings it trains distillscope's SAE with. It builds
SAELens' TopKTrainingSAE with its training defaults (see `main`), feeds SAELens' own trainer
(`SAETrainer.fit`, what `LanguageModelSAETrainingRunner` calls) with the batches of
sae_bench_common.batch_stream, and writes the trained SAE in SAELens' inference format
(`save_inference_model`: cfg.json + sae_weights.safetensors) and timing.json to FOLDER.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bar (ours prints none either)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sae_bench_common import TimedBatches, batch_stream, load_split  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--d-sae", type=int, required=True)
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--warmup-steps", type=int, required=True)
    ap.add_argument("--decay-steps", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sparse-activations", action="store_true",
                    help="SAELens' use_sparse_activations (COO feature acts, sparse decode); "
                    "with rescale_acts_by_decoder_norm off, as with it on the backward fails "
                    "on CPU (sae-lens 6.54, torch 2.13: aten::view has no SparseCPU kernel)")
    args = ap.parse_args()

    import sae_lens
    from sae_lens import SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # SAELens initialises from the global generator
    train, _, meta = load_split(args.data)
    d_in = train.shape[1]

    # Everything not set here is SAELens' default for a TopK training SAE: decoder rows start
    # at norm 0.1 with W_enc = W_dec^T, b_dec = 0, top-k taken on pre-activations scaled by
    # decoder norms (rescale_acts_by_decoder_norm), AuxK coefficient 1.
    sparse = {"use_sparse_activations": True, "rescale_acts_by_decoder_norm": False} \
        if args.sparse_activations else {}
    sae_cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=args.d_sae, k=args.k, dtype="float32",
                                    device="cpu", normalize_activations="none", **sparse)
    sae = TopKTrainingSAE(sae_cfg)
    # Same schedule as distillscope's: linear warm-up, constant, linear decay to zero (SAELens'
    # "constant" scheduler with warm-up and decay steps). Adam betas 0.9/0.999, gradient norm
    # clipped to 1 (hard-wired in SAETrainer), as in ours. No wandb, no checkpoints.
    trainer_cfg = SAETrainerConfig(
        total_training_samples=args.steps * args.batch, train_batch_size_samples=args.batch,
        lr=args.lr, lr_end=args.lr, lr_scheduler_name="constant",
        lr_warm_up_steps=args.warmup_steps, lr_decay_steps=args.decay_steps,
        adam_beta1=0.9, adam_beta2=0.999, device="cpu", autocast=False,
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False))
    batches = TimedBatches(batch_stream(train, args.batch, args.steps, args.seed))
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches)
    trainer.fit()
    end = time.perf_counter()
    timing = batches.timing(end, args.batch)
    if len(batches.requested) != args.steps:
        raise SystemExit(f"SAELens took {len(batches.requested)} batches, expected {args.steps}")

    # Cross-check for the shared evaluation in bench_sae.py (which reads the saved folder with
    # distillscope's loader): the same numbers from SAELens' own forward pass.
    _, heldout, _ = load_split(args.data)
    with torch.no_grad():
        sae.eval()
        acts = sae.encode(heldout)
        x_hat = sae.decode(acts)
        acts = acts.to_dense() if acts.is_sparse else acts
        own = {"explained_variance": float(1 - (heldout - x_hat).pow(2).sum()
                                           / (heldout - heldout.mean(0)).pow(2).sum()),
               "l0": float((acts > 0).float().sum(-1).mean())}
    out = Path(args.out)
    sae.save_inference_model(out / "sae")  # folds decoder norms into the weights
    info = {"method": "SAELens TopK" + (" (sparse activations, no decoder-norm rescaling)"
                                        if args.sparse_activations else " (defaults)"),
            "sae_lens": sae_lens.__version__, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "steps": args.steps, **timing,
            "dead_features": int(trainer.dead_neurons.sum()), "saelens_own_eval": own,
            "config": {"sae": {k: v for k, v in sae_cfg.to_dict().items() if k != "metadata"},
                       "trainer": {k: v for k, v in vars(trainer_cfg).items() if k != "logger"}},
            "data": meta}
    (out / "timing.json").write_text(json.dumps(info, indent=1, default=str))


if __name__ == "__main__":
    main()
