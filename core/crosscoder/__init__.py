"""Crosscoders on a pair of models (a base model and its variant): shared latents with one
encoder and one decoder per model, training step by step, and the analyses of issue 6.

    from core.crosscoder import Crosscoder, CrosscoderConfig, CrosscoderTrainer, CrosscoderTrainConfig
    cc = Crosscoder(CrosscoderConfig(d_in=640, d_latent=8192, architecture="batchtopk", k=32), seed=0)
    trainer = CrosscoderTrainer(cc, CrosscoderTrainConfig(total_steps=10_000))
    metrics = trainer.train_step(x_BMD)           # x [B, 2, d_in]: base and variant, same tokens
    cc.save(folder); cc = Crosscoder.load(folder)
    report = norm_report(cc)                      # relative norms, cosines, classes, histograms
    ls = latent_scaling(cc, x_BMD, latent_sets(cc)["variant-only"])   # ls.flagged()

Qt-free, like all of core/.
"""

from core.crosscoder.analysis import (CLASSES, FLAG_NU_ERROR, FLAG_NU_RECONSTRUCTION, THRESHOLDS,
                                      LatentScaling, ablate_latents, classify, decoder_cosines,
                                      decoder_norms, histogram, latent_contribution, latent_scaling,
                                      latent_sets, norm_report, relative_norms)
from core.crosscoder.model import (ARCHITECTURES, Crosscoder, CrosscoderConfig, CrosscoderError, describe,
                                   load)
from core.crosscoder.train import CrosscoderTrainConfig, CrosscoderTrainer, batch_metrics, evaluate

__all__ = ["ARCHITECTURES", "CLASSES", "FLAG_NU_ERROR", "FLAG_NU_RECONSTRUCTION", "THRESHOLDS",
           "Crosscoder", "CrosscoderConfig", "CrosscoderError", "CrosscoderTrainConfig",
           "CrosscoderTrainer", "LatentScaling", "ablate_latents", "batch_metrics", "classify",
           "decoder_cosines", "decoder_norms", "describe", "evaluate", "histogram",
           "latent_contribution", "latent_scaling", "latent_sets", "load", "norm_report",
           "relative_norms"]

# Analyses inside the two real models (ablation, reasoning tags, geometry): see their modules.
from core.crosscoder.ablation import AblationResult, ablate, parse_latent_set  # noqa: E402
from core.crosscoder.geometry import GeometryResult, geometry, load_quadruples, parallelogram_loss  # noqa: E402
from core.crosscoder.reasoning import ReasoningTags, load_prompt_sets, tag_latents  # noqa: E402

__all__ += ["AblationResult", "GeometryResult", "ReasoningTags", "ablate", "geometry", "load_prompt_sets",
            "load_quadruples", "parallelogram_loss", "parse_latent_set", "tag_latents"]
