"""Sparse dictionaries behind one interface (encode, decode, config, save, load) and a registry.

    from core.dictionaries import SAEConfig, create, load
    sae = create(SAEConfig(d_in=640, d_sae=8192, architecture="topk", k=32))
    sae.save(folder); same = load(folder)
    gemma_scope = load("layer_6/width_16k/average_l0_71/params.npz", hook="resid_post.6")
    check_fits(gemma_scope, teacher)      # DictionaryError saying what does not fit

One file per architecture; importing this package registers them all.
"""

from core.dictionaries.base import (ALIASES, REGISTRY, SAE, DictionaryError, SAEConfig, create,
                                    describe, estimate_input_scale, geometric_median, load, register)
from core.dictionaries import relu, topk, batchtopk  # noqa: F401  (registration)
from core.dictionaries.relu import ReluSAE
from core.dictionaries.topk import TopKSAE
from core.dictionaries.batchtopk import BatchTopKSAE, JumpReLUSAE
from core.dictionaries.formats import check_fits, hook_from_field, hook_to_field, load_params

__all__ = ["ALIASES", "REGISTRY", "SAE", "DictionaryError", "SAEConfig", "create", "describe",
           "estimate_input_scale", "geometric_median", "load", "register", "ReluSAE", "TopKSAE",
           "BatchTopKSAE", "JumpReLUSAE", "check_fits", "hook_from_field", "hook_to_field", "load_params"]
