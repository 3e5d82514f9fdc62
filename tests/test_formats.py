"""Dictionaries in the field's formats: round trips through the real sae-lens (a test-only
dependency, pinned in pyproject.toml), Gemma Scope parameter files against a hand computation,
bad files, and whether a dictionary fits a teacher."""

import json
import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from core.dictionaries import (BatchTopKSAE, DictionaryError, JumpReLUSAE, ReluSAE, SAEConfig, TopKSAE,
                               check_fits, create, hook_from_field, hook_to_field, load)
from core.dictionaries.base import CFG_FILENAME, WEIGHTS_FILENAME

TOL = {"rtol": 1e-5, "atol": 1e-5}
D_IN, D_SAE, K = 16, 32, 4


@pytest.fixture(scope="module")
def saelens():
    """sae-lens, imported once for this module (about 6 s). Its import sets an environment
    variable (TORCHINDUCTOR_CACHE_DIR) and warning filters; both are put back."""
    env = dict(os.environ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformer_lens' own DeprecationWarnings on import
        import sae_lens
    for key in set(os.environ) - set(env):
        del os.environ[key]
    os.environ.update(env)
    return sae_lens


def inputs(seed=1, n=64):
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed)) * 2


def randomize(module, seed=0):
    """Random weights of SAE-like scale; decoder rows of varied norm (so folding norms matters);
    thresholds that switch some features off."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.5 if name.startswith("b_") else 1.0))
        module.W_dec.mul_(torch.rand(module.W_dec.shape[0], 1, generator=g) * 2 + 0.2)
        if isinstance(getattr(module, "threshold", None), torch.Tensor):
            module.threshold.copy_(torch.rand(module.threshold.shape, generator=g) * 3)
    return module


def close(a, b):
    """Equal within 1e-5, relative to b's largest magnitude where that exceeds 1: float32 sums
    of a few dozen terms of size ~10 differ by ~1e-5 in the last bits whatever their order,
    and folding a scale into the weights reorders the rounding."""
    torch.testing.assert_close(a, b, rtol=TOL["rtol"], atol=TOL["atol"] * max(1.0, float(b.abs().max())))


def assert_same_function(ours, theirs, x):
    """Our encode/decode equal sae-lens' own on x (float32, within 1e-5)."""
    ours.eval(), theirs.eval()
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        f_theirs = f_theirs.to_dense() if f_theirs.is_sparse else f_theirs
        assert (f_theirs > 0).any() and (f_theirs == 0).any()  # a real test: some on, some off
        assert torch.equal(f_ours > 0, f_theirs > 0)  # the same features fire
        close(f_ours, f_theirs)
        close(ours.decode(f_ours), theirs.decode(f_theirs))
        close(ours(x)[0], theirs(x))


# --------------------------------------------------------------------------------------------
# (a) sae-lens writes, we read


def saelens_cases(sl):
    """(name, build, how it saves, our class, sae-lens class it loads back as)."""
    meta = {"hook_name": "blocks.3.hook_resid_post", "model_name": "gpt2"}

    def cfg(cls, **kw):
        c = cls(d_in=D_IN, d_sae=D_SAE, **kw)
        for key, value in meta.items():
            c.metadata[key] = value
        return c

    return [
        ("standard", lambda: sl.StandardSAE(cfg(sl.StandardSAEConfig)), "save_model", ReluSAE),
        ("standard, no b_dec on input", lambda: sl.StandardSAE(cfg(sl.StandardSAEConfig, apply_b_dec_to_input=False)),
         "save_model", ReluSAE),
        ("topk", lambda: sl.TopKSAE(cfg(sl.TopKSAEConfig, k=K)), "save_model", TopKSAE),
        ("topk, rescaled by decoder norms",
         lambda: sl.TopKSAE(cfg(sl.TopKSAEConfig, k=K, rescale_acts_by_decoder_norm=True)), "save_model", TopKSAE),
        ("jumprelu", lambda: sl.JumpReLUSAE(cfg(sl.JumpReLUSAEConfig)), "save_model", JumpReLUSAE),
        ("jumprelu, no b_dec on input", lambda: sl.JumpReLUSAE(cfg(sl.JumpReLUSAEConfig, apply_b_dec_to_input=False)),
         "save_model", JumpReLUSAE),
        # What sae-lens' trainer writes at the end (save_inference_model) ...
        ("standard, trained", lambda: sl.StandardTrainingSAE(cfg(sl.StandardTrainingSAEConfig)),
         "save_inference_model", ReluSAE),
        ("topk, trained", lambda: sl.TopKTrainingSAE(cfg(sl.TopKTrainingSAEConfig, k=K)),
         "save_inference_model", TopKSAE),
        ("batchtopk, trained", lambda: sl.BatchTopKTrainingSAE(cfg(sl.BatchTopKTrainingSAEConfig, k=K)),
         "save_inference_model", BatchTopKSAE),
        ("jumprelu, trained", lambda: sl.JumpReLUTrainingSAE(cfg(sl.JumpReLUTrainingSAEConfig)),
         "save_inference_model", JumpReLUSAE),
        # ... and in its checkpoints (save_model of a training SAE: norms not folded, BatchTopK's
        # threshold a scalar buffer)
        ("topk, checkpoint", lambda: sl.TopKTrainingSAE(cfg(sl.TopKTrainingSAEConfig, k=K)), "save_model", TopKSAE),
        ("batchtopk, checkpoint", lambda: sl.BatchTopKTrainingSAE(cfg(sl.BatchTopKTrainingSAEConfig, k=K)),
         "save_model", BatchTopKSAE),
    ]


CASES = ["standard", "standard, no b_dec on input", "topk", "topk, rescaled by decoder norms", "jumprelu",
         "jumprelu, no b_dec on input", "standard, trained", "topk, trained", "batchtopk, trained",
         "jumprelu, trained", "topk, checkpoint", "batchtopk, checkpoint"]


@pytest.mark.parametrize("case", CASES)
def test_saelens_saves_we_load_the_same_function(case, saelens, tmp_path):
    name, build, how, our_cls = next(c for c in saelens_cases(saelens) if c[0] == case)
    theirs = randomize(build())
    if hasattr(theirs, "topk_threshold"):
        theirs.topk_threshold = torch.tensor(1.5, dtype=torch.float64)
    getattr(theirs, how)(tmp_path / "sae")
    ours = load(tmp_path / "sae")
    assert type(ours) is our_cls, name
    assert ours.cfg.hook_name == "resid_post.3" and ours.cfg.model_name == "gpt2"
    assert not ours.training
    if our_cls in (TopKSAE, BatchTopKSAE):
        assert ours.cfg.k == K
    x = inputs()
    if isinstance(theirs, saelens.TrainingSAE):
        # sae-lens' own inference form of what it saved: what its users get. For a BatchTopK
        # checkpoint that is the JumpReLU its save_inference_model writes from the same state.
        if how == "save_model":
            theirs.save_inference_model(tmp_path / "inference")
            theirs = saelens.SAE.load_from_disk(tmp_path / "inference")
        else:
            theirs = saelens.SAE.load_from_disk(tmp_path / "sae")
    assert_same_function(ours, theirs, x)


def test_saelens_cfg_facts(saelens, tmp_path):
    """What sae-lens 6.54 writes, which the loader relies on (a newer sae-lens that changes it
    fails here first)."""
    sl = saelens
    batchtopk = randomize(sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)))
    batchtopk.save_inference_model(tmp_path / "b")
    cfg = json.loads((tmp_path / "b" / CFG_FILENAME).read_text())
    assert cfg["architecture"] == "jumprelu" and "k" not in cfg
    assert cfg["metadata"]["training_architecture"] == "batchtopk"
    assert cfg["metadata"]["training_architecture_details"]["k"] == K
    topk = randomize(sl.TopKTrainingSAE(sl.TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)))
    topk.save_inference_model(tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / CFG_FILENAME).read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == K and cfg["rescale_acts_by_decoder_norm"] is True
    from safetensors.torch import load_file
    W_dec = load_file(str(tmp_path / "t" / WEIGHTS_FILENAME))["W_dec"]
    torch.testing.assert_close(W_dec.norm(dim=1), torch.ones(D_SAE))  # norms folded on saving


def test_saelens_fractional_batchtopk_k_loads_as_jumprelu(saelens, tmp_path):
    sl = saelens
    sae = randomize(sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3.5)))
    sae.topk_threshold = torch.tensor(1.0, dtype=torch.float64)
    sae.save_inference_model(tmp_path / "sae")
    ours = load(tmp_path / "sae")
    assert type(ours) is JumpReLUSAE  # same encode; no whole k to train it on again
    assert_same_function(ours, sl.SAE.load_from_disk(tmp_path / "sae"), inputs())


# --------------------------------------------------------------------------------------------
# (b) we write, sae-lens reads


def our_sae(arch, seed=0, **kw):
    cfg = dict(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K, input_scale=0.37, hook_name="resid_post.3",
               model_name="tiny")
    cfg.update(kw)
    return randomize(create(SAEConfig(**cfg), seed=seed), seed=seed).eval()


@pytest.mark.parametrize("arch, kw, their_cls", [
    ("standard", {}, "StandardSAE"),
    ("standard", {"apply_b_dec_to_input": False, "input_scale": 1.0}, "StandardSAE"),
    ("topk", {}, "TopKSAE"),
    ("batchtopk", {}, "JumpReLUSAE"),
])
def test_we_save_saelens_loads_the_same_function(arch, kw, their_cls, saelens, tmp_path):
    ours = our_sae(arch, **kw)
    if arch == "batchtopk":
        with torch.no_grad():
            ours.threshold.fill_(1.2)  # what training leaves: one threshold for all features
    ours.save(tmp_path / "sae")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sae-lens takes our cfg.json without complaint
        theirs = saelens.SAE.load_from_disk(tmp_path / "sae")
    assert type(theirs).__name__ == their_cls
    assert theirs.cfg.metadata.hook_name == "blocks.3.hook_resid_post"  # how sae-lens users name it
    assert theirs.cfg.metadata.model_name == "tiny"
    if arch == "topk":
        assert theirs.cfg.k == K
    assert_same_function(ours, theirs, inputs())
    back = load(tmp_path / "sae")  # and ours again, unfolded and of its training architecture
    assert type(back) is type(ours) and back.cfg == ours.cfg
    assert load(tmp_path / "sae" / CFG_FILENAME).cfg == back.cfg == load(tmp_path / "sae" / WEIGHTS_FILENAME).cfg
    assert_same_function(back, theirs, inputs(2))


@pytest.mark.parametrize("arch", ["standard", "topk", "batchtopk"])
def test_float16_save(arch, saelens, tmp_path):
    ours = our_sae(arch)
    ours.save(tmp_path / "f32")
    ours.save(tmp_path / "f16", dtype=torch.float16)
    size = lambda name: (tmp_path / name / WEIGHTS_FILENAME).stat().st_size  # noqa: E731
    assert size("f16") < 0.55 * size("f32")
    cfg = json.loads((tmp_path / "f16" / CFG_FILENAME).read_text())
    assert cfg["dtype"] == "float16"
    half = load(tmp_path / "f16")
    assert half.W_enc.dtype == torch.float16 and half.cfg.dtype == "float16"
    for name, tensor in half.state_dict().items():  # fp16 rounding of the same weights
        torch.testing.assert_close(tensor.float(), ours.state_dict()[name], rtol=2e-3, atol=1e-4, msg=name)
    # sae-lens reads the fp16 file too; both upcast to float32 compute the same function
    ours32 = load(tmp_path / "f16", dtype="float32")
    assert ours32.W_enc.dtype == torch.float32
    assert_same_function(ours32, saelens.SAE.load_from_disk(tmp_path / "f16", dtype="float32"), inputs())
    assert saelens.SAE.load_from_disk(tmp_path / "f16").W_enc.dtype == torch.float16


def test_float16_save_refuses_what_does_not_fit(tmp_path):
    sae = our_sae("topk", input_scale=1.0)
    with torch.no_grad():
        sae.W_dec[0, 0] = 1e6
    with pytest.raises(DictionaryError, match="too large for float16") as info:
        sae.save(tmp_path / "sae", dtype=torch.float16)
    assert info.value.hint
    with pytest.raises(DictionaryError, match="dtype 'int8'"):
        sae.save(tmp_path / "sae", dtype="int8")


# --------------------------------------------------------------------------------------------
# (c) Gemma Scope parameter files


def gemma_scope_params(seed=0, d_in=D_IN, d_sae=D_SAE):
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(d_in, d_sae, generator=g), "W_dec": torch.randn(d_sae, d_in, generator=g),
            "b_enc": torch.randn(d_sae, generator=g) * 0.5, "b_dec": torch.randn(d_in, generator=g),
            "threshold": torch.rand(d_sae, generator=g) * 3}


def by_hand(p, x):
    """Gemma Scope's JumpReLU as its tutorial writes it: no b_dec subtracted from the input."""
    pre = x @ p["W_enc"] + p["b_enc"]
    f = (pre > p["threshold"]) * torch.relu(pre)
    return f, f @ p["W_dec"] + p["b_dec"]


def test_gemma_scope_npz(tmp_path):
    p = gemma_scope_params()
    folder = tmp_path / "layer_6" / "width_16k" / "average_l0_71"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in p.items()})
    x = inputs()
    f, x_hat = by_hand(p, x)
    for path in (folder / "params.npz", folder):  # the file or its folder
        sae = load(path, hook="resid_post.6")
        assert type(sae) is JumpReLUSAE and not sae.cfg.apply_b_dec_to_input
        assert sae.cfg.hook_name == "resid_post.6" and (sae.d_in, sae.d_sae) == (D_IN, D_SAE)
        torch.testing.assert_close(sae.encode(x), f, **TOL)
        torch.testing.assert_close(sae.decode(sae.encode(x)), x_hat, **TOL)
        assert (f > 0).any() and (f == 0).any()
    with pytest.raises(DictionaryError) as info:
        load(folder / "params.npz")
    assert "does not say where in the model" in str(info.value)
    assert "hook='resid_post.6'" in info.value.hint and "layer 6" in info.value.hint


def test_gemma_scope_2_safetensors(saelens, tmp_path):
    from safetensors.torch import save_file

    p = gemma_scope_params(seed=3)
    folder = tmp_path / "resid_post" / "layer_5_width_16k_l0_medium"
    folder.mkdir(parents=True)
    save_file({k.lower(): v for k, v in p.items()}, str(folder / "params.safetensors"))  # w_enc, w_dec, ...
    (folder / "config.json").write_text(json.dumps({"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt",
                                                    "hf_hook_point_in": "model.layers.5.output"}))
    sae = load(folder / "params.safetensors")  # the hook from Gemma Scope 2's config.json
    assert sae.cfg.hook_name == "resid_post.5" and sae.cfg.model_name == "gemma-v3-270m-pt"
    x = inputs()
    f, x_hat = by_hand(p, x)
    torch.testing.assert_close(sae.encode(x), f, **TOL)
    torch.testing.assert_close(sae(x)[0], x_hat, **TOL)
    # sae-lens' own JumpReLU with the same parameters (what its Gemma Scope loader builds)
    theirs = saelens.JumpReLUSAE(saelens.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False))
    theirs.load_state_dict(p)
    assert_same_function(sae, theirs, x)
    with pytest.raises(DictionaryError, match="says the dictionary reads resid_post.5, not resid_post.4"):
        load(folder, hook="resid_post.4")
    # saved in our layout, it is a SAELens folder that keeps the hook
    sae.save(tmp_path / "converted")
    again = load(tmp_path / "converted")
    assert again.cfg.hook_name == "resid_post.5" and not again.cfg.apply_b_dec_to_input
    torch.testing.assert_close(again.encode(x), f, **TOL)


def test_params_keep_their_dtype_unless_asked(tmp_path):
    from safetensors.torch import save_file

    p = gemma_scope_params()
    save_file({k: v.to(torch.bfloat16) for k, v in p.items()}, str(tmp_path / "params.safetensors"))
    assert load(tmp_path / "params.safetensors", hook="mlp_out.1").W_enc.dtype == torch.bfloat16
    sae = load(tmp_path / "params.safetensors", hook="mlp_out.1", dtype=torch.float32)
    assert sae.W_enc.dtype == torch.float32 and sae.cfg.hook_name == "mlp_out.1"


# --------------------------------------------------------------------------------------------
# (d) bad files: a DictionaryError with a hint, never a traceback, never unpickling


def npz(path, **arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_bad_parameter_files(tmp_path, monkeypatch):
    unpickled = []
    monkeypatch.setattr(pickle, "load", lambda *a, **k: unpickled.append(a))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: unpickled.append(a))
    good = {k: v.numpy() for k, v in gemma_scope_params().items()}
    torch.save({"W_enc": torch.zeros(2, 2)}, tmp_path / "sae.pt")
    (tmp_path / "weights.dat").write_bytes(pickle.dumps({"W_enc": [1.0]}))
    (tmp_path / "pickles").mkdir()
    torch.save({}, tmp_path / "pickles" / "pytorch_model.bin")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(300))
    truncated = npz(tmp_path / "t" / "params.npz", **good)
    truncated.write_bytes(truncated.read_bytes()[:600])
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, good["W_enc"])
    cases = {
        "missing path": (tmp_path / "nowhere", "does not exist"),
        "torch.save file": (tmp_path / "sae.pt", "pickle-based"),
        "pickle under another name": (tmp_path / "weights.dat", "pickle-based"),
        "folder of pickles": (tmp_path / "pickles", "pickle-based"),
        "object array in npz": (npz(tmp_path / "o" / "params.npz", **good, names=np.array([{"a": 1}], dtype=object)),
                                "pickle-based"),
        "empty folder": (tmp_path / "empty", "holds no dictionary"),
        "empty file": (tmp_path / "empty.npz", "is empty"),
        "text file": (tmp_path / "notes.txt", "not a dictionary file"),
        "garbage safetensors": (tmp_path / "garbage.safetensors", "cannot be read as safetensors"),
        "truncated npz": (truncated, "cannot be read"),
        "a single array": (single, "single array"),
        "no threshold": (npz(tmp_path / "a" / "params.npz", **{k: v for k, v in good.items() if k != "threshold"}),
                         "missing threshold"),
        "extra key": (npz(tmp_path / "b" / "params.npz", **good, W_extra=good["b_dec"]), "unexpected W_extra"),
        "transcoder": (npz(tmp_path / "c" / "params.npz", **good, affine_skip_connection=good["W_enc"][:, :16]),
                       "transcoder"),
        "transposed W_dec": (npz(tmp_path / "d" / "params.npz", **{**good, "W_dec": good["W_dec"].T}),
                             "stored transposed"),
        "W_dec to another width": (npz(tmp_path / "e" / "params.npz", **{**good, "W_dec": good["W_dec"][:, :8]}),
                                   "not an SAE"),
        "vector W_enc": (npz(tmp_path / "f" / "params.npz", **{**good, "W_enc": good["b_enc"]}), "must be a matrix"),
        "b_enc shape": (npz(tmp_path / "g" / "params.npz", **{**good, "b_enc": good["b_dec"]}),
                        "'b_enc' in"),
        "nan": (npz(tmp_path / "h" / "params.npz", **{**good, "threshold": good["threshold"] * np.nan}), "NaN"),
        "integers": (npz(tmp_path / "i" / "params.npz", **{**good, "b_dec": np.zeros(D_IN, dtype=np.int64)}),
                     "not floating-point"),
    }
    for name, (path, text) in cases.items():
        with pytest.raises(DictionaryError) as info:
            load(path, hook="resid_post.1")
        assert text in str(info.value), (name, str(info.value))
        assert info.value.hint, name
    assert not unpickled
    good_file = npz(tmp_path / "ok" / "params.npz", **good)
    for hook, text in [("attn.3", "not one distillscope reads"), ("resid_post", "KIND.LAYER")]:
        with pytest.raises(DictionaryError, match=text):
            load(good_file, hook=hook)


def test_bad_saelens_extras(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "sae"
    folder.mkdir()
    tensors = {k: v for k, v in gemma_scope_params().items() if k != "threshold"}
    save_file({**tensors, "scaling_factor": torch.full((D_SAE,), 2.0)}, str(folder / WEIGHTS_FILENAME))
    (folder / CFG_FILENAME).write_text(json.dumps({"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE}))
    with pytest.raises(DictionaryError, match="scaling_factor"):
        load(folder)
    save_file({**tensors, "scaling_factor": torch.ones(D_SAE)}, str(folder / WEIGHTS_FILENAME))
    assert type(load(folder)) is ReluSAE  # all ones: what SAELens < 6 wrote, harmless
    (folder / CFG_FILENAME).write_text(json.dumps({"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE,
                                                   "folded_input_scale": -1}))
    with pytest.raises(DictionaryError, match="folded_input_scale"):
        load(folder)


# --------------------------------------------------------------------------------------------
# Hook names and (e) the fit against a teacher


def test_hook_names_between_conventions():
    for field, ours in [("blocks.6.hook_resid_post", "resid_post.6"), ("blocks.7.hook_resid_pre", "resid_post.6"),
                        ("blocks.6.ln2.hook_normalized", "mlp_in.6"), ("model.layers.6", "resid_post.6"),
                        ("layers.6", "resid_post.6"), ("model.layers.6.output", "resid_post.6"),
                        ("layers.6.mlp", "mlp_out.6"), ("resid_post.6", "resid_post.6")]:
        assert hook_from_field(field) == ours, field
    for unknown in ("blocks.0.hook_resid_pre", "blocks.6.attn.hook_z", "blocks.6.hook_mlp_out", "hook_embed", ""):
        assert hook_from_field(unknown) is None, unknown
    assert hook_to_field("resid_post.6") == "blocks.6.hook_resid_post"
    assert hook_to_field("mlp_in.2") == "blocks.2.ln2.hook_normalized"
    assert hook_to_field("mlp_out.2") == "mlp_out.2"  # TransformerLens' hook_mlp_out differs on Gemma


def test_check_fits_on_a_tiny_teacher(tiny_teacher, tmp_path):
    from core.models import HookPoint, capture

    d, n = tiny_teacher.d_model, tiny_teacher.n_layers  # 32 wide, 4 layers
    ids = torch.tensor([[1, 5, 6, 7]])
    acts = capture(tiny_teacher, ids, torch.ones_like(ids), [HookPoint(k, 1) for k in ("resid_post", "mlp_in", "mlp_out")])
    assert {h.kind: a.shape[-1] for h, a in acts.items()} == {"resid_post": d, "mlp_in": d, "mlp_out": d}

    def sae(d_in=d, hook="resid_post.2", **kw):
        return create(SAEConfig(d_in=d_in, d_sae=4 * d_in, architecture="topk", k=4, hook_name=hook, **kw))

    for hook in ("resid_post.2", "mlp_in.3", "mlp_out.0"):
        assert check_fits(sae(hook=hook), tiny_teacher) == HookPoint.parse(hook)
    bad = {
        "width": (sae(d_in=640, model_name="gemma-3-270m"),
                  f"reads 640-wide activations (d_in), but {tiny_teacher.name} is {d} wide at resid_post.2",
                  "It was made for gemma-3-270m"),
        "layer": (sae(hook="resid_post.9"), f"has no layer 9 (its layers are 0 to {n - 1})", "choose a dictionary"),
        "no hook": (sae(hook=""), "does not record where", "hook='resid_post.6'"),
        "attention": (sae(hook="blocks.1.attn.hook_z"), "'blocks.1.attn.hook_z', which distillscope cannot hook",
                      "mlp_in.L"),
    }
    for name, (dictionary, what, hint) in bad.items():
        with pytest.raises(DictionaryError) as info:
            check_fits(dictionary, tiny_teacher)
        assert what in info.value.what, (name, info.value.what)
        assert hint in info.value.hint, (name, info.value.hint)
    # A hook we cannot read by its name: the caller says where it is in our terms.
    sae(hook="blocks.1.hook_mlp_out").save(tmp_path / "tl")
    with pytest.raises(DictionaryError, match="cannot hook"):
        check_fits(load(tmp_path / "tl"), tiny_teacher)
    assert check_fits(load(tmp_path / "tl", hook="mlp_out.1"), tiny_teacher) == HookPoint("mlp_out", 1)
