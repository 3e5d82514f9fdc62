"""Crosscoders (issue 6): ground-truth recovery of features planted in one model, the other or
both; the loss by hand; Latent Scaling on planted and trained cases; ablation; save/load with
clear errors; exact resume of training. Everything on CPU, seeded, in seconds."""

import json
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.crosscoder import (CLASSES, Crosscoder, CrosscoderConfig, CrosscoderError, CrosscoderTrainConfig,
                             CrosscoderTrainer, ablate_latents, classify, decoder_cosines, describe, evaluate,
                             histogram, latent_contribution, latent_scaling, latent_sets, norm_report,
                             relative_norms)
from core.crosscoder.analysis import latent_scaling_sums
from core.crosscoder.model import CFG_FILENAME, WEIGHTS_FILENAME
from core.crosscoder.synthetic import paired_activations, paired_batches, planted_pair
from core.crosscoder.train import describe_settings
from core.dictionaries import DictionaryError
from core.errors import DistillscopeError

torch.set_num_threads(1)  # 2-core machine shared with other work; also keeps runs reproducible

# --------------------------------------------------------------------------------------------
# Ground truth: 34 near-orthogonal unit directions in R^32, each firing on a token with
# probability 2/34 (about 2 per token, BatchTopK's k) with magnitude Uniform(1, 3), the same code
# in both models: 20 shared, 4 shared but turned in the variant (cosine 0.9), 4 base-only,
# 4 variant-only, 2 'weak-base' (the variant's direction, at 0.3 of the strength in the base).
# The variant's activations are 4 times larger than the base's: per-model input scaling must
# make that irrelevant (unscaled, a shared latent would sit at relative norm 0.8).
# 128 latents, 1500 steps of 256 tokens, lr 3e-3, seed 0. Measured with model seeds 0-5 (L1) and
# 0-3 (BatchTopK): every planted feature matched at cosine >= 0.995; shared and rotated relative
# norms 0.43..0.53; exclusive ones 0.000 / 1.000 (L1), <= 0.006 / >= 0.995 (BatchTopK);
# weak-base 0.90..0.995 with L1 (true value 0.77: the L1 penalty shrinks the base decoder) and
# 0.76..0.77 with BatchTopK. With 64 latents L1 lost a variant-only feature for one seed in
# four; an L1 coefficient of 3 (here 2) starts losing features too.

P_ACTIVE = 2 / 34
VARIANT_GAIN = 4.0
STEPS, BATCH = 1500, 256


@pytest.fixture(scope="module")
def pair():
    return planted_pair(32, n_shared=20, n_rotated=4, n_base_only=4, n_variant_only=4, n_weak_base=2,
                        rotation_cos=0.9, weak_scale=0.3, seed=0)


def gain(x):
    return x * torch.tensor([1.0, VARIANT_GAIN])[:, None]


def heldout(pair, n=8192, seed=77):
    x, codes = paired_activations(pair, n, p_active=P_ACTIVE, seed=seed)
    return gain(x), codes


def train(pair, architecture, steps=STEPS, **cfg_kwargs):
    cfg = CrosscoderConfig(d_in=32, d_latent=128, architecture=architecture, k=2, l1_coefficient=2.0,
                           dead_after_tokens=20_000, **cfg_kwargs)
    cc = Crosscoder(cfg, seed=0)
    trainer = CrosscoderTrainer(cc, CrosscoderTrainConfig(total_steps=steps, lr=3e-3, warmup_steps=50))
    history, t0 = [], time.monotonic()
    for x in paired_batches(pair, BATCH, steps, seed=1, p_active=P_ACTIVE):
        history.append(trainer.train_step(gain(x)))
    assert trainer.done and trainer.step == steps and trainer.tokens == steps * BATCH
    print(f"\n{architecture}: {steps} steps in {time.monotonic() - t0:.1f} s, last {history[-1]}")
    return cc.eval(), history


@pytest.fixture(scope="module")
def l1_run(pair):
    return train(pair, "l1")


@pytest.fixture(scope="module")
def btk_run(pair):
    return train(pair, "batchtopk")


def best_latents(cc, pair, kind):
    """For each planted feature of `kind`: (best latent, its cosine), matching the feature's
    direction in the model that has it at full strength against that model's decoder rows."""
    m = 0 if kind == "base-only" else 1
    W = cc.decoder_directions(m)
    out = []
    for j in pair.indices(kind):
        cos = torch.nn.functional.cosine_similarity(W, pair.directions[j, m][None], dim=-1)
        out.append((int(cos.argmax()), float(cos.max())))
    return out


def check_ground_truth(cc, history, pair, variant_only_min, base_only_max):
    rel, cos = relative_norms(cc), decoder_cosines(cc)
    report = {}
    for kind in ("shared", "rotated", "base-only", "variant-only"):
        matches = best_latents(cc, pair, kind)
        report[kind] = [(round(c, 3), round(float(rel[j]), 3), round(float(cos[j]), 3)) for j, c in matches]
        assert min(c for _, c in matches) > 0.9, (kind, report[kind])
    print(report)
    for j, _ in best_latents(cc, pair, "variant-only"):
        assert rel[j] > variant_only_min
    for j, _ in best_latents(cc, pair, "base-only"):
        assert rel[j] < base_only_max
    for j, _ in best_latents(cc, pair, "shared"):
        assert 0.3 <= rel[j] <= 0.7
        assert cos[j] > 0.98  # the same direction in both models
    for j, _ in best_latents(cc, pair, "rotated"):
        assert 0.3 <= rel[j] <= 0.7
        assert 0.85 < cos[j] < 0.95  # planted at 0.9
    # per-model input scaling: each model's scaled activations have mean squared norm d_in
    x, _ = heldout(pair)
    for m in range(2):
        assert (x[:, m] * cc.cfg.input_scale[m]).pow(2).sum(-1).mean() == pytest.approx(32, rel=0.15)
    assert cc.cfg.input_scale[0] / cc.cfg.input_scale[1] == pytest.approx(VARIANT_GAIN, rel=0.15)
    assert history[-1]["loss"] < history[0]["loss"] / 2
    ev = evaluate(cc, [x])
    print({k: v for k, v in ev.items() if k != "frequency"})
    return ev


def test_l1_crosscoder_recovers_planted_features(l1_run, pair):
    cc, history = l1_run
    ev = check_ground_truth(cc, history, pair, variant_only_min=0.99, base_only_max=0.01)
    assert ev["fve_base"] > 0.9 and ev["fve_variant"] > 0.9  # measured 0.93-0.94 (L1 shrinkage)
    assert {"loss", "mse_base", "mse_variant", "fve_base", "fve_variant", "l0", "dead_fraction",
            "l1_penalty", "lr", "step", "tokens"} <= set(history[-1])
    assert history[0]["l1_penalty"] < history[-1]["l1_penalty"]  # the coefficient warms up


def test_batchtopk_crosscoder_recovers_planted_features(btk_run, pair):
    cc, history = btk_run
    ev = check_ground_truth(cc, history, pair, variant_only_min=0.98, base_only_max=0.02)
    assert ev["fve_base"] > 0.98 and ev["fve_variant"] > 0.98  # measured 0.995+
    assert history[-1]["l0"] == pytest.approx(2.0)  # k per token on average over the batch
    assert 1.5 < ev["l0"] < 2.5  # the learned threshold keeps about k at inference
    assert history[-1]["threshold"] > 0


def test_l1_makes_a_weak_base_feature_look_variant_only_and_batchtopk_does_not(l1_run, btk_run, pair):
    """The artifact Minder et al. describe (Complete Shrinkage): the weak-base features' true
    relative norm is ~0.77; L1 pushes it toward 1, BatchTopK keeps it."""
    s = torch.tensor(l1_run[0].cfg.input_scale) * torch.tensor([1.0, VARIANT_GAIN])  # normalized units
    true_rel = float(s[1] / (0.3 * s[0] + s[1]))
    assert 0.74 < true_rel < 0.8
    l1_rel = [float(relative_norms(l1_run[0])[j]) for j, _ in best_latents(l1_run[0], pair, "weak-base")]
    btk_rel = [float(relative_norms(btk_run[0])[j]) for j, _ in best_latents(btk_run[0], pair, "weak-base")]
    print("weak-base relative norms: true", round(true_rel, 3), "L1", l1_rel, "BatchTopK", btk_rel)
    assert min(l1_rel) > true_rel + 0.08
    assert all(abs(r - true_rel) < 0.03 for r in btk_rel)


def test_latent_scaling_flags_shrunk_latents_in_a_trained_l1_crosscoder(l1_run, pair):
    cc, _ = l1_run
    x, _ = heldout(pair)
    true_only = [j for j, _ in best_latents(cc, pair, "variant-only")]
    weak = [j for j, _ in best_latents(cc, pair, "weak-base")]
    shared = [j for j, _ in best_latents(cc, pair, "shared")][:4]
    ls = latent_scaling(cc, [x[:4096], x[4096:]], true_only + weak + shared, owner="variant")
    for row in ls.rows():
        print(row)
    nu_e, nu_r, flags = ls.nu_error(), ls.nu_reconstruction(), ls.flagged()
    n = len(true_only)
    assert (nu_e[:n].abs() < 0.05).all() and (nu_r[:n].abs() < 0.05).all() and not flags[:n].any()
    # the base holds the weak-base features at 0.3 of their strength: nu_eps finds that amount
    assert ((nu_e[n:n + 2] > 0.2) & (nu_e[n:n + 2] < 0.45)).all() and flags[n:n + 2].all()
    assert ((nu_e[n + 2:] - 1).abs() < 0.1).all() and ((nu_r[n + 2:] - 1).abs() < 0.1).all()
    assert (ls.n_active > 300).all()
    # one tensor or batches: the same sums
    whole = latent_scaling(cc, x, true_only + weak + shared)
    assert torch.allclose(whole.beta_error, ls.beta_error, atol=1e-5)


# --------------------------------------------------------------------------------------------
# By hand


def hand_crosscoder(architecture="l1", **kw):
    cfg = CrosscoderConfig(d_in=2, d_latent=2, architecture=architecture, k=1, l1_coefficient=0.5, **kw)
    cc = Crosscoder(cfg, seed=0)
    with torch.no_grad():
        cc.W_enc.zero_()
        cc.W_enc[0, 0, 0] = 1.0  # latent 0 reads the base's first coordinate
        cc.W_enc[1, 1, 1] = 1.0  # latent 1 reads the variant's second coordinate
        cc.b_enc.copy_(torch.tensor([0.0, -0.5]))
        cc.W_dec.zero_()
        cc.W_dec[0, 0] = torch.tensor([1.0, 0.0])  # latent 0: base only, norm 1
        cc.W_dec[1, 0] = torch.tensor([0.6, 0.8])  # latent 1: norm 1 in the base ...
        cc.W_dec[1, 1] = torch.tensor([0.0, 1.0])  # ... and 1 in the variant: s_1 = 2
        cc.b_dec.zero_()
    return cc


@torch.no_grad()
def test_l1_loss_by_hand():
    cc = hand_crosscoder()
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # one token: base (1, 0), variant (0, 2)
    out = cc.loss(x)
    # pre = (1, 2 - 0.5) = f; x_hat_base = 1 (1, 0) + 1.5 (0.6, 0.8) = (1.9, 1.2): error 0.81 + 1.44
    # x_hat_variant = 1.5 (0, 1): error 0.25. L1: 0.5 * (1 * 1 + 1.5 * 2) = 2.
    assert out["feature_acts"].tolist() == [[1.0, 1.5]]
    assert out["mse"].tolist() == pytest.approx([2.25, 0.25])
    assert float(out["l1_penalty"]) == pytest.approx(2.0)
    assert float(out["loss"]) == pytest.approx(4.5)
    assert float(cc.loss(x, l1_factor=0.5)["loss"]) == pytest.approx(3.5)  # the warm-up factor
    # input scales: the same map in each model's units (variant given 10x larger)
    cc.cfg.input_scale = [1.0, 0.1]
    x10 = x * torch.tensor([1.0, 10.0])[:, None]
    assert float(cc.loss(x10)["loss"]) == pytest.approx(4.5)
    x_hat, f = cc.eval()(x10)
    assert torch.allclose(x_hat, torch.tensor([[[1.9, 1.2], [0.0, 15.0]]]))


@torch.no_grad()
def test_batchtopk_ranks_by_activation_times_summed_decoder_norm():
    cc = hand_crosscoder("batchtopk")
    with torch.no_grad():
        cc.W_dec[0, 0] = torch.tensor([4.0, 0.0])  # s_0 = 4, s_1 = 2
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    cc.train()
    f = cc.encode(x)
    assert f.tolist() == [[1.0, 0.0]]  # score 1 * 4 beats 1.5 * 2, though f_1 > f_0
    out = cc.loss(x)
    assert "l1_penalty" not in out and float(out["aux"]) == 0.0
    # x_hat_base = (4, 0): error 9; x_hat_variant = 0: error 4
    assert float(out["loss"]) == pytest.approx(13.0)
    cc.after_step(out["feature_acts"])
    assert cc.threshold.tolist() == [4.0, 4.0]  # the smallest kept score, set by the first batch
    cc.eval()
    assert cc.encode(x).tolist() == [[0.0, 0.0]]  # 4 is not above the threshold 4
    with torch.no_grad():
        cc.threshold.fill_(2.5)
    assert cc.encode(x).tolist() == [[1.0, 1.5]]  # eval: independent of the batch


def test_latent_scaling_on_planted_cases():
    """A hand-built crosscoder over d_in = 4 with exact answers:
    latent 0: variant-only decoder e0, but the base activations hold 0.5 f e0 (Complete
    Shrinkage): nu_eps = 0.5, nu_r = 0 -> flagged.
    latent 1: truly variant-only (e1 in the variant, nothing in the base): nu = 0 -> kept.
    latent 2: variant-only decoder e2 while latent 3 writes e2 to the base on the same tokens
    (Latent Decoupling): nu_eps = 0, nu_r = 1 -> flagged."""
    cfg = CrosscoderConfig(d_in=4, d_latent=4, architecture="l1")
    cc = Crosscoder(cfg, seed=0)
    E = torch.eye(4)
    with torch.no_grad():
        cc.W_enc.zero_()
        for j, dim in ((0, 0), (1, 1), (2, 2), (3, 2)):
            cc.W_enc[1, dim, j] = 1.0  # every latent reads the variant
        cc.b_enc.zero_()
        cc.W_dec.zero_()
        cc.W_dec[0, 1], cc.W_dec[1, 1], cc.W_dec[2, 1] = E[0], E[1], E[2]
        cc.W_dec[3, 0] = E[2]
        cc.b_dec.copy_(torch.tensor([[0.3, -0.2, 0.1, 0.4], [0.0, 0.0, 0.0, 0.0]]))
    g = torch.Generator().manual_seed(0)
    c = torch.rand(500, 3, generator=g) * (torch.rand(500, 3, generator=g) < 0.3)
    x = torch.zeros(500, 2, 4)
    x[:, 1, :3] = c  # the variant: three features on e0, e1, e2
    x[:, 0, 0] = 0.5 * c[:, 0]  # the base: half of feature 0 ...
    x[:, 0, 2] = c[:, 2]  # ... and feature 2, both
    x[:, 0] += cc.b_dec[0].detach()  # plus the base's offset, which no latent explains
    x[:, 0, 3] += torch.randn(500, generator=g)  # and noise orthogonal to every latent
    ls = latent_scaling(cc.eval(), x, [0, 1, 2], owner="variant")
    assert ls.beta_error[1].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)  # variant row
    assert ls.beta_error[0].tolist() == pytest.approx([0.5, 0.0, 0.0], abs=1e-5)
    assert ls.beta_reconstruction[1].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert ls.beta_reconstruction[0].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-5)
    assert ls.nu_error().tolist() == pytest.approx([0.5, 0.0, 0.0], abs=1e-5)
    assert ls.nu_reconstruction().tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-5)
    assert ls.flagged().tolist() == [True, False, True]
    assert ls.flagged(nu_error_max=0.6, nu_reconstruction_max=1.5).tolist() == [False, False, False]
    rows = ls.rows()
    assert rows[0]["latent"] == 0 and rows[0]["owner"] == "variant" and rows[0]["flagged"]
    assert json.loads(json.dumps(rows)) == rows
    # owner = base for latent 3 (looks base-only): the variant holds it through latent 2
    ls3 = latent_scaling(cc, x, [3], owner="base")
    assert ls3.nu_reconstruction().tolist() == pytest.approx([1.0], abs=1e-5) and ls3.flagged().all()
    # the closed-form sums match the definition computed the slow way
    x_s = cc.scale_in(x)
    f = cc.encode(x)
    A_err, A_rec, C, _ = latent_scaling_sums(x_s, f, cc.W_dec.detach(), cc.b_dec.detach(), torch.tensor([0]), 1)
    d = cc.W_dec.detach()[0, 1]
    x_hat = cc.decode_scaled(f).detach()
    target = x_s[:, 0] - x_hat[:, 0] + f[:, :1] * cc.W_dec.detach()[0, 0]
    beta_slow = float(((f[:, 0:1] * target).sum(0) @ d / (d @ d * f[:, 0].pow(2).sum())).detach())
    assert float(A_err[0, 0] / (d @ d * C[0])) == pytest.approx(beta_slow, abs=1e-6)
    with pytest.raises(CrosscoderError, match="Latent indices"):
        latent_scaling(cc, x, [4])
    never = latent_scaling(cc, x[:, :, :] * 0, [0])
    assert never.n_active.tolist() == [0] and never.flagged().tolist() == [True]


# --------------------------------------------------------------------------------------------
# Analysis data and ablation


def test_relative_norms_classes_and_histograms():
    W = torch.zeros(7, 2, 3)
    norms = [(1.0, 0.0), (0.0, 2.0), (1.0, 1.0), (0.95, 0.05), (0.8, 0.2), (0.2, 0.8), (0.0, 0.0)]
    for j, (b, v) in enumerate(norms):
        W[j, 0, 0], W[j, 1, 1 if j == 2 else 0] = b, v
    rel = relative_norms(W)
    assert rel[:6].tolist() == pytest.approx([0.0, 1.0, 0.5, 0.05, 0.2, 0.8])
    assert torch.isnan(rel[6])
    assert decoder_cosines(W)[2] == pytest.approx(0.0) and decoder_cosines(W)[4] == pytest.approx(1.0)
    assert classify(rel) == ["base-only", "variant-only", "shared", "base-only", "base-leaning",
                             "variant-leaning", "dead"]
    assert classify(rel, thresholds={"base_only_below": 0.01})[3] == "base-leaning"
    h = histogram(torch.tensor([0.0, 0.25, 0.5, 1.0, float("nan")]), 4, 0.0, 1.0)
    assert h == {"counts": [1, 1, 1, 1], "edges": [0.0, 0.25, 0.5, 0.75, 1.0]}


def test_norm_report_and_latent_sets(btk_run, pair):
    cc, _ = btk_run
    x, _ = heldout(pair)
    freq = evaluate(cc, [x])["frequency"]
    report = norm_report(cc, bins=20, frequency=freq)
    assert json.loads(json.dumps(report)) == report  # plain data
    assert len(report["relative_norm"]) == len(report["class"]) == 128
    assert set(report["class"]) <= set(CLASSES)
    assert report["base"] == "base" and report["variant"] == "variant"
    counts = report["counts"]
    assert counts["variant-only"] >= 4 and counts["base-only"] >= 4 and counts["shared"] >= 24
    assert counts["dead"] == sum(1 for f in freq if f == 0)  # never-firing latents are not 'shared'
    live = 128 - counts["dead"]
    assert sum(report["relative_norm_histogram"]["counts"]) == live
    assert sum(report["cosine_histogram"]["counts"]) == counts["shared"]
    assert report["cosine_histogram"]["edges"][0] == -1.0
    sets = latent_sets(cc, frequency=freq)
    for j, _ in best_latents(cc, pair, "variant-only"):
        assert j in sets["variant-only"].tolist()
    for j, _ in best_latents(cc, pair, "base-only"):
        assert j in sets["base-only"].tolist()
    with pytest.raises(CrosscoderError, match="frequencies"):
        latent_sets(cc, frequency=[1.0])


def test_ablate_latents_pure_tensors():
    g = torch.Generator().manual_seed(0)
    x, f, W = torch.randn(2, 3, 5, generator=g), torch.rand(2, 3, 4, generator=g), torch.randn(4, 5, generator=g)
    ablated, change = ablate_latents(x, f, W, [1, 3])
    expected = -(f[..., 1:2] * W[1] + f[..., 3:4] * W[3])
    assert torch.allclose(change, expected, atol=1e-6) and torch.allclose(ablated, x + expected)
    assert torch.allclose(latent_contribution(f, W, [1, 3]), -expected, atol=1e-6)
    mask = torch.tensor([[False, True, True], [False, True, True]])  # e.g. leave BOS alone
    ablated, change = ablate_latents(x, f, W, [1, 3], mask_BT=mask)
    assert torch.equal(ablated[:, 0], x[:, 0]) and torch.allclose(change[:, 1:], expected[:, 1:], atol=1e-6)
    empty, change = ablate_latents(x, f, W, [])
    assert torch.equal(empty, x) and not change.any()
    half = ablate_latents(x.half(), f, W, [0])[0]
    assert half.dtype == torch.float16
    with pytest.raises(CrosscoderError, match="different tokens"):
        ablate_latents(x, f[:, :2], W, [0])
    with pytest.raises(CrosscoderError, match="decoder has shape"):
        ablate_latents(x, f, W.T, [0])


def test_ablating_variant_only_latents_removes_the_planted_variant_features(btk_run, pair):
    cc, _ = btk_run
    x, codes = heldout(pair, n=2048)
    with torch.no_grad():
        f = cc.encode(x)
    variant_only = latent_sets(cc)["variant-only"]
    x_var = x[:, 1][None]  # [1, T, D]: the variant's residual on 2048 tokens
    ablated, change = ablate_latents(x_var, f[None], cc.decoder_directions("variant"), variant_only)
    planted = pair.indices("variant-only")
    expected = x_var - VARIANT_GAIN * codes[:, planted] @ pair.directions[planted, 1]
    err = (ablated - expected).norm() / (x_var - expected).norm()
    print("relative error of the ablation against the planted answer", float(err))
    assert err < 0.1
    # tokens without a variant-only feature are left (almost) alone
    untouched = codes[:, planted].sum(1) == 0
    assert 1000 < int(untouched.sum()) < 2048
    assert float(change[0, untouched].norm()) < 0.01 * float(x_var[0, untouched].norm())


# --------------------------------------------------------------------------------------------
# Save, load, bad files


def test_save_load_round_trip(btk_run, tmp_path, pair):
    cc, _ = btk_run
    folder = cc.save(tmp_path / "cc")
    assert sorted(p.name for p in folder.iterdir()) == [CFG_FILENAME, WEIGHTS_FILENAME]  # no temp files
    data = json.loads((folder / CFG_FILENAME).read_text())
    assert data["format"] == "distillscope-crosscoder/1" and data["model_names"] == ["base", "variant"]
    assert data["input_scale"] == cc.cfg.input_scale
    back = Crosscoder.load(folder)
    assert not back.training and back.cfg == cc.cfg
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        assert torch.equal(getattr(back, name), getattr(cc, name)), name
    x, _ = heldout(pair, n=256)
    assert torch.equal(back.encode(x), cc.encode(x))
    assert torch.equal(back(x)[0], cc(x)[0])
    cc.save(folder)  # over an existing save
    l1 = Crosscoder(CrosscoderConfig(d_in=8, d_latent=16, architecture="l1"), seed=3)
    back = Crosscoder.load(l1.save(tmp_path / "l1"))
    assert back.cfg.architecture == "l1" and not hasattr(back, "threshold")
    assert torch.equal(back.W_dec, l1.W_dec)


def write_bad(folder, cfg=None, tensors=None, raw_cfg=None):
    folder.mkdir(parents=True)
    if raw_cfg is not None:
        (folder / CFG_FILENAME).write_bytes(raw_cfg)
    elif cfg is not None:
        (folder / CFG_FILENAME).write_text(json.dumps(cfg))
    if tensors is not None:
        save_file(tensors, str(folder / WEIGHTS_FILENAME))
    return folder


def good_tensors(M=2, D=4, F=8, threshold=False):
    t = {"W_enc": torch.zeros(M, D, F), "b_enc": torch.zeros(F), "W_dec": torch.zeros(F, M, D),
         "b_dec": torch.zeros(M, D)}
    if threshold:
        t["threshold"] = torch.zeros(F)
    return t


def test_bad_folders_raise_clear_errors(tmp_path):
    cfg = {"format": "distillscope-crosscoder/1", "architecture": "l1", "d_in": 4, "d_latent": 8}
    good = good_tensors()
    file = tmp_path / "file.txt"
    file.write_text("hello")
    sae = write_bad(tmp_path / "sae", {"architecture": "topk", "d_in": 4, "d_sae": 8})
    (sae / "sae_weights.safetensors").write_bytes(b"")
    cases = {
        "not there": (tmp_path / "nowhere", "does not exist"),
        "a file": (file, "is not a folder"),
        "no cfg": (write_bad(tmp_path / "a", tensors=good), "cfg.json is missing"),
        "bad json": (write_bad(tmp_path / "b", raw_cfg=b'{"d_in": 4,', tensors=good), "not valid JSON"),
        "binary": (write_bad(tmp_path / "b2", raw_cfg=b"\xff\xfe\x00junk"), "not valid JSON"),
        "empty": (write_bad(tmp_path / "b3", raw_cfg=b""), "not valid JSON"),
        "json list": (write_bad(tmp_path / "c", raw_cfg=b"[1, 2]"), "must hold a JSON object"),
        "an SAE": (sae, "holds a sparse autoencoder, not a crosscoder"),
        "no format": (write_bad(tmp_path / "c2", {"d_in": 4, "d_latent": 8}), "not a distillscope crosscoder"),
        "newer format": (write_bad(tmp_path / "c3", {**cfg, "format": "distillscope-crosscoder/9"}),
                         "which this version does not read"),
        "no d_latent": (write_bad(tmp_path / "d", {k: v for k, v in cfg.items() if k != "d_latent"}),
                        "lacks 'd_latent'"),
        "unknown arch": (write_bad(tmp_path / "d2", {**cfg, "architecture": "gated"}),
                         "'architecture' must be one of l1, batchtopk"),
        "bad value": (write_bad(tmp_path / "e", {**cfg, "architecture": "batchtopk", "k": 100}),
                      "'k' (100) cannot exceed"),
        "bad type": (write_bad(tmp_path / "e2", {**cfg, "d_in": "four"}), "'d_in' must be a whole number"),
        "three models": (write_bad(tmp_path / "e3", {**cfg, "n_models": 3}), "'n_models' must be at most 2"),
        "names": (write_bad(tmp_path / "e4", {**cfg, "model_names": ["base"]}), "'model_names' must be a list of 2"),
        "same names": (write_bad(tmp_path / "e5", {**cfg, "model_names": ["a", "a"]}), "must differ"),
        "bad scale": (write_bad(tmp_path / "e6", {**cfg, "input_scale": [1.0, -2.0]}), "positive numbers"),
        "no weights": (write_bad(tmp_path / "f", cfg), "no crosscoder_weights.safetensors"),
        "shape": (write_bad(tmp_path / "g", {**cfg, "d_latent": 16}, good),
                  "has shape [2, 4, 8], but cfg.json (n_models=2, d_in=4, d_latent=16) needs [2, 4, 16]"),
        "missing tensor": (write_bad(tmp_path / "h", cfg, {k: v for k, v in good.items() if k != "b_enc"}),
                           "missing b_enc"),
        "no threshold": (write_bad(tmp_path / "h2", {**cfg, "architecture": "batchtopk", "k": 2}, good),
                         "missing threshold"),
        "extra tensor": (write_bad(tmp_path / "i", cfg, good_tensors(threshold=True)), "unexpected threshold"),
        "nan": (write_bad(tmp_path / "j", cfg, {**good, "b_dec": torch.full((2, 4), float("nan"))}), "NaN"),
        "ints": (write_bad(tmp_path / "j2", cfg, {**good, "b_enc": torch.zeros(8, dtype=torch.int64)}),
                 "not floating-point"),
    }
    for name, (folder, text) in cases.items():
        with pytest.raises(CrosscoderError) as info:
            Crosscoder.load(folder)
        assert text in str(info.value), (name, str(info.value))
        assert info.value.hint, name
        assert isinstance(info.value, DictionaryError) and isinstance(info.value, DistillscopeError)
    truncated = write_bad(tmp_path / "k", cfg, good)
    data = (truncated / WEIGHTS_FILENAME).read_bytes()
    for cut in (len(data) // 2, 3, 0):
        (truncated / WEIGHTS_FILENAME).write_bytes(data[:cut])
        with pytest.raises(CrosscoderError, match="cannot be read"):
            Crosscoder.load(truncated)
    (truncated / WEIGHTS_FILENAME).write_bytes(b"\x00\xff" * 1000)
    with pytest.raises(CrosscoderError, match="cannot be read"):
        Crosscoder.load(truncated)


def test_configs_are_documented_and_validated():
    for fields in describe_settings().values():
        for f in fields:
            assert f["help"], f["name"]
    names = [f["name"] for f in describe(CrosscoderConfig)]
    assert {"d_in", "d_latent", "n_models", "architecture", "k", "l1_coefficient", "model_names", "hook",
            "input_scale"} <= set(names)
    arch = next(f for f in describe(CrosscoderConfig) if f["name"] == "architecture")
    assert arch["choices"] == ("l1", "batchtopk")
    assert Crosscoder(CrosscoderConfig(d_in=4, d_latent=8, architecture="relu")).architecture == "l1"
    for bad, text in (({"d_latent": 0}, "at least 1"), ({"architecture": "topk"}, "must be one of"),
                      ({"model_names": ["base", "no spaces"]}, "short names"),
                      ({"aux_k": 99}, "'aux_k' (99) cannot exceed")):
        with pytest.raises(CrosscoderError, match="invalid") as info:
            Crosscoder(CrosscoderConfig(**{"d_in": 4, "d_latent": 8, "k": 2, **bad}))
        assert text in str(info.value)
    with pytest.raises(CrosscoderError, match="training settings are invalid"):
        CrosscoderTrainer(Crosscoder(CrosscoderConfig(d_in=4, d_latent=8, k=2)), CrosscoderTrainConfig(total_steps=0))
    with pytest.raises(CrosscoderError, match="'k' \\(32\\) cannot exceed"):
        Crosscoder(CrosscoderConfig(d_in=4, d_latent=8))  # the default k needs 32 latents or more
    cc = Crosscoder(CrosscoderConfig(d_in=4, d_latent=8, k=2, model_names=["qwen", "r1-distill"]))
    assert cc.model_index("r1-distill") == 1 and cc.model_index(-2) == 0
    with pytest.raises(CrosscoderError, match="no model named 'chat'"):
        cc.model_index("chat")
    with pytest.raises(CrosscoderError, match=r"reads \[\.\.\., 2, 4\]"):
        cc.encode(torch.zeros(3, 4))
    with pytest.raises(CrosscoderError, match="all zero"):
        cc.set_input_scales(torch.zeros(5, 2, 4))
    trainer = CrosscoderTrainer(cc, CrosscoderTrainConfig(total_steps=5))
    metrics = trainer.train_step(torch.randn(16, 2, 4))
    assert "mse_r1-distill" in metrics and "fve_qwen" in metrics
    with pytest.raises(CrosscoderError, match="diverged"):
        trainer.train_step(torch.full((16, 2, 4), float("inf")))


# --------------------------------------------------------------------------------------------
# Exact resume


@pytest.mark.parametrize("architecture", ["l1", "batchtopk"])
def test_resume_gives_identical_weights(architecture, pair, tmp_path):
    """40 steps straight against 20 + checkpoint (through safetensors and JSON files) + a fresh
    crosscoder and trainer + 20: bit-identical weights, threshold, counters and metrics.
    dead_after_tokens is small so BatchTopK's AuxK is active across the break."""
    def fresh(seed):
        cfg = CrosscoderConfig(d_in=32, d_latent=128, architecture=architecture, k=2, dead_after_tokens=256)
        cc = Crosscoder(cfg, seed=seed)
        return cc, CrosscoderTrainer(cc, CrosscoderTrainConfig(total_steps=40, lr=3e-3, warmup_steps=10,
                                                              l1_warmup_fraction=0.5))

    batches = [gain(x) for x in paired_batches(pair, 128, 40, seed=5, p_active=P_ACTIVE)]
    cc_a, tr_a = fresh(0)
    straight = [tr_a.train_step(x) for x in batches]

    cc_b, tr_b = fresh(0)
    first = [tr_b.train_step(x) for x in batches[:20]]
    state = tr_b.state_dict()
    save_file(state["tensors"], str(tmp_path / "trainer.safetensors"))
    (tmp_path / "trainer.json").write_text(json.dumps(state["meta"]))
    del cc_b, tr_b
    cc_c, tr_c = fresh(123)  # different initial weights: all replaced by the checkpoint
    tr_c.load_state_dict({"tensors": load_file(str(tmp_path / "trainer.safetensors")),
                          "meta": json.loads((tmp_path / "trainer.json").read_text())})
    assert tr_c.step == 20 and tr_c.tokens == 20 * 128 and not tr_c.done
    rest = [tr_c.train_step(x) for x in batches[20:]]

    assert first + rest == straight
    assert tr_c.done and tr_c.step == 40
    for name in cc_a.tensor_names():
        assert torch.equal(getattr(cc_a, name), getattr(cc_c, name)), name
    assert torch.equal(cc_a.tokens_since_fired, cc_c.tokens_since_fired)
    assert cc_a.cfg.input_scale == cc_c.cfg.input_scale
    if architecture == "batchtopk":
        assert any(m["aux"] > 0 for m in straight[20:])

    other, tr_other = fresh(0)
    bad = {"tensors": state["tensors"], "meta": {**state["meta"], "model_cfg": {"d_latent": 65}}}
    with pytest.raises(CrosscoderError, match="d_latent = 65"):
        tr_other.load_state_dict(bad)
    with pytest.raises(CrosscoderError, match="incomplete"):
        tr_other.load_state_dict({"tensors": {}, "meta": {}})
