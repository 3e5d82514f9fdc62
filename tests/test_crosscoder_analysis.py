"""Crosscoder analyses that need real models (issue 6, seed 003): ablation of latent sets inside
both models with hooks (figure 2), reasoning-category tags, the parallelogram test (figures
4-5), and `distillscope crosscoder ...`. Tiny random models built in the test; the variant is
a copy of the base with one block's weights perturbed."""

import copy
import dataclasses
import json
import math
import types

import numpy as np
import pytest
import torch

from core.cli import main
from core.crosscoder import Crosscoder, CrosscoderConfig, CrosscoderError
from core.crosscoder.ablation import (METRICS, ablate, frequency_buckets, next_token_metrics, parse_latent_set,
                                      random_matched_set, residual_edit, resolve_hook, top_frequency_set)
from core.crosscoder.geometry import (GeometryError, Quadruple, cumulative_curve, fraction_below, geometry,
                                      load_quadruples, losses_from_vectors, parallelogram_loss, pca_2d,
                                      word_representations)
from core.crosscoder.reasoning import (CONTROL, GENERAL, ReasoningError, activity_from_activations,
                                       load_prompt_sets, tag_activity, tag_latents, tags_from_activity)
from core.errors import Cancelled
from core.models import HookPoint, capture
from core.progress import TaskState

torch.set_num_threads(1)

TEXTS = ["the quick brown fox jumps over the lazy dog.", "a stitch in time saves nine.",
         "all that glitters is not gold.", "love is patient, love is kind.", "eat your vegetables."]
LAST = 3  # the tiny models have 4 blocks; resid_post.3 feeds the final norm and the head


@pytest.fixture(scope="module")
def variant(tiny_teacher):
    """The tiny teacher with block 1's weights perturbed: same tokenizer, different model."""
    model = copy.deepcopy(tiny_teacher.model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.model.layers[1].parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return dataclasses.replace(tiny_teacher, model=model, name="tiny-variant", fingerprint="perturbed")


def _hooks(teacher):
    return [(i, kind, fn) for i, module in [("model", teacher.model)] + list(enumerate(teacher.layers))
            for kind, hooks in (("post", module._forward_hooks), ("pre", module._forward_pre_hooks))
            for fn in hooks.values()]


def planted_crosscoder(d_in=32, hook=f"resid_post.{LAST}", variant_scale=2.0, seed=0):
    """A crosscoder whose latents have known activations on every token: W_enc = 0 and
    b_enc = [2, 0, 0, 0.5], so f = (2, 0, 0, 0.5) everywhere. Latent 0 writes v (norm 3) into the
    variant only, latent 3 writes w into both; the variant's input scale is 2, so in the
    variant's own units latent 0 adds f_0 * v / 2 = v."""
    cc = Crosscoder(CrosscoderConfig(d_in=d_in, d_latent=4, architecture="l1", hook=hook,
                                     input_scale=[1.0, variant_scale]), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    v = torch.randn(d_in, generator=g)
    v = 3.0 * v / v.norm()
    w = torch.randn(d_in, generator=g)
    with torch.no_grad():
        cc.W_enc.zero_()
        cc.b_enc.copy_(torch.tensor([2.0, 0.0, 0.0, 0.5]))
        cc.W_dec.zero_()
        cc.W_dec[0, 1] = v
        cc.W_dec[3, 0] = w
        cc.W_dec[3, 1] = w
        cc.b_dec.zero_()
    return cc.eval(), v


# ---------------------------------------------------------------------------------------------
# Ablation


def test_ablating_an_empty_set_changes_nothing_and_leaves_no_hooks(tiny_teacher, variant):
    cc, _ = planted_crosscoder()
    before = (_hooks(tiny_teacher), _hooks(variant))
    result = ablate(cc, [tiny_teacher, variant], TEXTS, {"empty": []}, baselines=())
    assert (_hooks(tiny_teacher), _hooks(variant)) == before
    assert result.sets == {"empty": []} and result.ablated_models == ["base", "variant"]
    assert result.n_tokens == sum(len(t) - 2 for t in tiny_teacher.tokenize(TEXTS, 64))
    for m in ("base", "variant"):
        for met in METRICS:
            assert np.all(result.per_token["empty"][m][met] == 0.0), (m, met)


def test_planted_latent_changes_logits_by_the_hand_computed_amount(tiny_teacher, variant):
    """Latent 0 fires at 2 on every token and writes v into the variant only (v / 2 per unit in
    the variant's units, times 2): ablating it is h - v at every non-BOS token of the variant's
    last block output. The logits that follow are the final norm and the head of h - v, which
    we compute by hand and compare with the experiment's per-token numbers."""
    cc, v = planted_crosscoder()
    result = ablate(cc, [tiny_teacher, variant], TEXTS, {"planted": [0]}, baselines=(), batch_size=2)
    for met in METRICS:  # the base decoder of latent 0 is zero: nothing changes there, exactly
        assert np.all(result.per_token["planted"]["base"][met] == 0.0)

    from core.activations import pad_batch

    ids, mask = pad_batch(variant.tokenize(TEXTS, 64), variant.pad_id)
    point = HookPoint("resid_post", LAST)
    with torch.no_grad():
        h = capture(variant, ids, mask, [point])[point].double()
        norm = copy.deepcopy(variant.model.model.norm).double()  # the final norm, then the head
        W_head = variant.model.lm_head.weight.double()
        assert variant.model.lm_head.bias is None and variant.config.final_logit_softcapping is None
        clean = norm(h) @ W_head.T
        h_abl = h.clone()
        h_abl[:, 1:] -= v.double()  # BOS left alone
        ablated = norm(h_abl) @ W_head.T
        model_logits = variant.model(input_ids=ids, attention_mask=mask).logits.double()
    assert torch.allclose(clean[mask.bool()], model_logits[mask.bool()], atol=1e-4)  # the head, by hand
    lp_c, lp_a = torch.log_softmax(clean, -1), torch.log_softmax(ablated, -1)
    want = {m: [] for m in METRICS}
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        for t in range(1, n - 1):
            want["mean_abs_logit_change"].append(float((ablated[b, t] - clean[b, t]).abs().mean()))
            want["kl"].append(float((lp_c[b, t].exp() * (lp_c[b, t] - lp_a[b, t])).sum()))
            nxt = int(ids[b, t + 1])
            want["loss_change"].append(float(lp_c[b, t, nxt] - lp_a[b, t, nxt]))
    for met in METRICS:
        got = result.per_token["planted"]["variant"][met]
        assert got.shape == (len(want[met]),)
        assert np.allclose(got, want[met], rtol=1e-3, atol=1e-5), met
    assert np.all(result.per_token["planted"]["variant"]["mean_abs_logit_change"] > 1e-3)
    # per-document means and the histogram of figure 2: base all in the first bin
    docs = result.per_document("planted", "variant", "kl")
    assert docs.shape == (len(TEXTS),) and np.all(docs > 0)
    h = result.histogram("planted", "mean_abs_logit_change", bins=5)
    assert len(h["edges"]) == 6 and sum(h["counts"]["base"]) == sum(h["counts"]["variant"]) == len(TEXTS)
    assert h["counts"]["base"][0] == len(TEXTS)
    json.dumps(result.to_json(), allow_nan=False)


@pytest.mark.parametrize("scale", [1e-3, 0.3, 200.0])
def test_next_token_metrics_in_float32_match_float64(scale):
    """Tiny changes (KL ~ 1e-7) keep their precision; huge ones (beyond float32's exp range)
    fall back to float64 rows."""
    g = torch.Generator().manual_seed(3)
    clean = 8 * torch.randn(2, 6, 20_000, generator=g)
    ablated = clean + scale * torch.randn(2, 6, 20_000, generator=g) + 0.3
    ids = torch.randint(0, 20_000, (2, 6), generator=g)
    pos = torch.ones(2, 6, dtype=torch.bool)
    pos[1, 2] = False
    got = next_token_metrics(clean, ablated, ids, pos)
    lp_c, lp_a = torch.log_softmax(clean.double(), -1), torch.log_softmax(ablated.double(), -1)
    rows = pos.clone()
    rows[:, -1] = False
    kl = (lp_c.exp() * (lp_c - lp_a)).sum(-1)[rows]
    nxt = torch.cat([ids[:, 1:], ids[:, :1]], 1)[..., None]
    loss = (lp_c.gather(-1, nxt) - lp_a.gather(-1, nxt))[..., 0][rows]
    assert got["kl"].shape == (9,)
    assert torch.allclose(got["kl"], kl, rtol=1e-3, atol=0)
    assert torch.allclose(got["loss_change"], loss, rtol=1e-4, atol=1e-4)
    assert torch.allclose(got["mean_abs_logit_change"], (ablated - clean).double().abs().mean(-1)[rows], rtol=1e-5)


def test_the_edit_is_minus_the_contribution_on_every_token_but_bos_and_padding(tiny_teacher, variant):
    """A hook registered after ours sees the edited block output: one batch, the variant only,
    gives three passes through block 1 (capture, clean, ablated); ablated - clean is -v on real
    tokens after BOS and exactly zero on BOS and padding."""
    cc, v = planted_crosscoder(hook="resid_post.1")
    seen = []
    handle = variant.layers[1].register_forward_hook(lambda m, i, o: seen.append((o[0] if isinstance(o, tuple) else o).detach().clone()))
    try:
        ablate(cc, [tiny_teacher, variant], TEXTS, [0], baselines=(), ablate_in=["variant"], batch_size=len(TEXTS))
    finally:
        handle.remove()
    assert len(seen) == 3
    from core.activations import pad_batch

    _, mask = pad_batch(variant.tokenize(TEXTS, 64), variant.pad_id)
    diff = seen[2] - seen[1]
    inside = mask.bool().clone()
    inside[:, 0] = False
    assert torch.allclose(diff[inside], -v.expand(int(inside.sum()), -1), atol=1e-5)
    assert torch.all(diff[~inside] == 0)


def test_ablation_hooks_are_removed_on_error_and_cancel(tiny_teacher, variant):
    before = _hooks(variant)
    ids = torch.tensor([variant.tokenize(["love is kind"], 16)[0]])
    with pytest.raises(RuntimeError):
        with residual_edit(variant, 1, torch.zeros(1, ids.shape[1], 32)):
            assert len(_hooks(variant)) == len(before) + 1
            raise RuntimeError("boom")
    assert _hooks(variant) == before
    with pytest.raises(CrosscoderError, match="prepared for a pass of shape"):  # raised inside forward
        with residual_edit(variant, 1, torch.zeros(1, ids.shape[1] + 1, 32)):
            variant.model(input_ids=ids)
    assert _hooks(variant) == before
    calls = []

    def progress(done, total, message):
        calls.append(message)
        if message == "Ablating" and done == 1:
            state.cancel()

    state = TaskState(progress)
    cc, _ = planted_crosscoder()
    with pytest.raises(Cancelled):
        ablate(cc, [tiny_teacher, variant], TEXTS, {"planted": [0]}, batch_size=2, state=state)
    assert _hooks(variant) == before and "Firing frequencies" in calls


def test_baselines_random_matched_and_top_frequency(tiny_teacher, variant):
    freq = torch.tensor([0.0, 0.0, 0.5, 0.5, 0.1, 0.1, 0.9, 0.05, 0.3, 0.0])
    buckets = frequency_buckets(freq, 2)
    assert buckets[0] == -1 and buckets[6] == 1 and buckets[7] == 0
    chosen = random_matched_set([0, 6, 4], freq, seed=1, n_buckets=2)
    assert chosen.numel() == 3 and not set(chosen.tolist()) & {0, 6, 4}
    assert sorted(int(buckets[j]) for j in chosen) == sorted(int(buckets[j]) for j in (0, 6, 4))
    assert top_frequency_set(freq, 20).tolist() == [2, 6]  # the 2 busiest of 10 (ties by index)
    assert top_frequency_set(freq, 100).numel() == 7  # never-firing latents are left out

    cc, _ = planted_crosscoder()
    r = ablate(cc, [tiny_teacher, variant], TEXTS, {"planted": [0]}, frequency_top=(25,), ablate_in=["variant"])
    assert list(r.sets) == ["planted", "planted random-matched", "top-25%-frequency"]
    assert r.ablated_models == ["variant"] and "base" not in r.per_token["planted"]
    assert r.frequency.tolist() == [1.0, 0.0, 0.0, 1.0]  # f = (2, 0, 0, 0.5) on every token
    assert r.sets["planted random-matched"] == [3]  # the only other latent that fires
    assert r.sets["top-25%-frequency"] == [0]
    rows = r.summary()
    assert [row["set"] for row in rows] == list(r.sets) and all(row["model"] == "variant" for row in rows)


def test_latent_set_specs_hooks_and_model_checks(tiny_teacher, variant):
    cc, _ = planted_crosscoder()
    assert parse_latent_set("variant-only", cc).tolist() == [0]
    assert parse_latent_set("shared", cc).tolist() == [3]
    assert parse_latent_set("rel>0.5", cc).tolist() == [0]  # the seed's figure 2a cut; 1, 2 have no decoder
    assert parse_latent_set("latents:3, 0", cc).tolist() == [0, 3]
    for bad in ("nonsense", "latents:a", "latents:9"):
        with pytest.raises(CrosscoderError):
            parse_latent_set(bad, cc)
    assert resolve_hook(cc).name == f"resid_post.{LAST}"
    with pytest.raises(CrosscoderError, match="trained at"):
        resolve_hook(cc, "resid_post.1")
    with pytest.raises(CrosscoderError, match="Only block outputs"):
        resolve_hook(None, "mlp_out.1")
    wide, _ = planted_crosscoder(d_in=16)
    with pytest.raises(CrosscoderError, match="width 32"):
        ablate(wide, [tiny_teacher, variant], TEXTS, [0])
    with pytest.raises(CrosscoderError, match="No model given for variant"):
        ablate(cc, {"base": tiny_teacher}, TEXTS, [0])
    pair = types.SimpleNamespace(base=tiny_teacher, variant=variant)  # what core.pairs.ModelPair offers
    assert ablate(cc, pair, TEXTS[:1], [0], baselines=()).ablated_models == ["base", "variant"]
    with pytest.raises(Exception, match="No text"):
        ablate(cc, [tiny_teacher, variant], ["", "  "], [0])


# ---------------------------------------------------------------------------------------------
# Reasoning categories


def _synthetic_activity(seed=0):
    """10 texts of 8 tokens per set, 6 latents with planted behaviour (see the test)."""
    g = torch.Generator().manual_seed(seed)
    sets = ["self-reflection", "deductive", "alternative", "contrastive", CONTROL]
    per_set = {}
    for s in sets:
        texts = []
        for i in range(10):
            f = torch.zeros(8, 6)
            pos = int(torch.randint(0, 8, (1,), generator=g))
            if s == "self-reflection":
                f[pos, 0] = 3.0  # latent 0: only on self-reflection, once per text
            f[:, 1] = torch.rand(8, generator=g) < 0.5  # latent 1: everywhere alike
            f[pos, 2] = {"deductive": 2.0, CONTROL: 1.5}.get(s, 0.0)  # 2: deductive, but control too
            f[pos, 3] = 0.5 if s == CONTROL else 2.0  # 3: every reasoning set, weak on control
            if s == "contrastive" and i == 0:
                f[pos, 4] = 5.0  # 4: contrastive, but in one text of ten only
            f[pos, 5] = {"alternative": 3.0, "deductive": 1.0}.get(s, 0.0)  # 5: alternative, 3x the rest
            texts.append(f)
        per_set[s] = texts
    return activity_from_activations(per_set)


def test_tagging_picks_planted_category_specific_latents():
    activity = _synthetic_activity()
    assert activity.n_texts == [10] * 5
    assert float(activity.act[activity.row("self-reflection"), 0]) == 3.0
    assert float(activity.fires[activity.row("contrastive"), 4]) == pytest.approx(0.1)
    tag, spec, vs_control = tag_activity(activity)
    assert tag == ["self-reflection", "", "", GENERAL, "", "alternative"]
    assert math.isinf(float(spec[0])) and float(spec[5]) == pytest.approx(3.0) and float(spec[3]) == pytest.approx(4.0)
    assert float(vs_control[1, 2]) == pytest.approx(2.0 / 1.5)  # deductive vs control, reported
    tags = tags_from_activity(activity)
    rows = tags.rows()
    assert [r["latent"] for r in rows] == [0, 5, 3]
    assert rows[0]["silent_elsewhere"] and rows[0]["specificity"] is None
    assert tags.top("alternative")[0]["latent"] == 5
    assert tags.counts() == {"self-reflection": {"all": 1}, "alternative": {"all": 1}, GENERAL: {"all": 1}}
    json.dumps(tags.to_json(), allow_nan=False)
    # a looser firing fraction lets the one-text contrastive latent through; under a stricter
    # ratio latent 5 is no longer alternative-specific (3x deductive), only silent on control
    assert tag_activity(activity, min_fraction=0.1)[0][4] == "contrastive"
    assert tag_activity(activity, ratio=3.5)[0][5] == GENERAL
    with pytest.raises(ReasoningError):
        tag_activity(activity, control="neutral")
    with pytest.raises(ReasoningError):
        tag_activity(activity, ratio=1.0)


def test_prompt_sets_bundled_and_bad_files(tmp_path):
    sets = load_prompt_sets()
    assert set(sets) == {"self-reflection", "deductive", "alternative", "contrastive", CONTROL}
    assert all(20 <= len(v) <= 30 for v in sets.values())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"category": "deductive", "text": "Therefore it rains."}\n{broken\n')
    with pytest.raises(ReasoningError, match="bad.jsonl:2"):
        load_prompt_sets(bad)
    no_control = tmp_path / "nc.jsonl"
    no_control.write_text('{"category": "deductive", "text": "Therefore it rains."}\n')
    with pytest.raises(ReasoningError, match="control"):
        load_prompt_sets(no_control)
    unlabeled = tmp_path / "u.jsonl"
    unlabeled.write_text('{"category": "control", "text": "A cup."}\n{"text": "Hence so."}\n')
    with pytest.raises(ReasoningError, match="no category"):
        load_prompt_sets(unlabeled)
    with pytest.raises(ReasoningError, match="does not exist"):
        load_prompt_sets(tmp_path / "missing.jsonl")


def test_tag_latents_on_a_model_pair(tiny_teacher, variant):
    cc, _ = planted_crosscoder()
    sets = {"deductive": ["therefore the fox jumps.", "so the dog is lazy."],
            "contrastive": ["but love is kind.", "however, gold glitters."], CONTROL: ["eat your vegetables."]}
    tags = tag_latents(cc, {"base": tiny_teacher, "variant": variant}, sets)
    assert tags.activity.names == ["deductive", "contrastive", CONTROL] and tags.activity.n_texts == [2, 2, 1]
    # latents 0 and 3 fire at a constant on every token: on every set alike, so never specific
    assert float(tags.activity.act[0, 0]) == pytest.approx(2.0) and tags.tag == ["", "", "", ""]
    assert tags.latent_class[0] == "variant-only" and tags.settings["hook"] == f"resid_post.{LAST}"
    assert len(tags.rows(tagged_only=False)) == 4


# ---------------------------------------------------------------------------------------------
# Geometry


def test_parallelogram_loss_exact_and_by_hand():
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    assert float(parallelogram_loss(a, b, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))) == 0.0
    # u = (1, 0), v = (1, 1): ||u - v|| = 1, mean side (1 + sqrt 2) / 2
    loss = float(parallelogram_loss(a, b, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])))
    assert loss == pytest.approx(2 / (1 + math.sqrt(2)))
    assert float(parallelogram_loss(a, b, b, a)) == pytest.approx(2.0)  # u = -v: the largest loss
    assert math.isnan(float(parallelogram_loss(a, a, a, a)))
    # rotating, scaling and translating all four points changes nothing
    g = torch.Generator().manual_seed(0)
    P = torch.randn(4, 50, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(50, 50, generator=g, dtype=torch.float64))
    moved = 7.5 * P @ Q + torch.randn(50, generator=g, dtype=torch.float64)
    assert float(parallelogram_loss(*moved)) == pytest.approx(float(parallelogram_loss(*P)))


def test_pca_to_2d_keeps_the_loss_of_planar_quadruples():
    g = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(64, 2, generator=g, dtype=torch.float64))  # a plane in R^64
    offset = torch.randn(64, generator=g, dtype=torch.float64)
    flat = {"a": [0.0, 0.0], "b": [2.0, 0.5], "c": [1.0, 3.0], "d": [3.5, 3.0],
            "e": [-1.0, 1.0], "f": [0.0, 2.5]}
    vectors = {w: torch.tensor(p, dtype=torch.float64) @ basis.T + offset for w, p in flat.items()}
    quads = [Quadruple("a", "b", "c", "d", "k"), Quadruple("e", "f", "a", "b", "k")]
    for mode in ("quadruple", "class"):
        full, in_2d, _ = losses_from_vectors(vectors, quads, pca=mode)
        assert np.allclose(full, in_2d, atol=1e-10), mode
    hand = float(parallelogram_loss(*[torch.tensor(flat[w]) for w in "abcd"]))
    assert full[0] == pytest.approx(hand) and hand > 0
    proj, comps, _, explained = pca_2d(torch.stack(list(vectors.values())))
    assert proj.shape == (6, 2) and explained == pytest.approx(1.0)
    assert torch.allclose(comps @ comps.T, torch.eye(2, dtype=torch.float64), atol=1e-10)
    # off the plane, the 2D loss is a different number
    vectors["d"] = vectors["d"] + 2.0 * torch.randn(64, generator=g, dtype=torch.float64)
    full, in_2d, _ = losses_from_vectors(vectors, quads, pca="class")
    assert abs(full[0] - in_2d[0]) > 1e-3


def test_cumulative_curve_is_monotone_and_ends_at_one():
    losses = [0.7, 0.1, float("nan"), 1.3, 0.1, 0.4]
    c = cumulative_curve(losses)
    assert c["loss"] == [0.1, 0.1, 0.4, 0.7, 1.3]
    assert np.all(np.diff(c["fraction"]) > 0) and np.all(np.diff(c["loss"]) >= 0) and c["fraction"][-1] == 1.0
    assert fraction_below(losses, [0.1, 0.5, 2.0]) == [0.4, 0.6, 1.0]
    assert cumulative_curve([]) == {"loss": [], "fraction": []}


def test_quadruple_files_bundled_formats_and_errors(tmp_path):
    quads = load_quadruples()
    classes = {q.function for q in quads}
    assert len(quads) == 168 and classes == {"gender", "capital", "comparative", "past-tense", "plural", "antonym"}
    assert all(sum(q.function == c for q in quads) == 28 for c in classes)
    assert Quadruple("man", "woman", "king", "queen", "gender", quads[0].source) in quads
    (tmp_path / "q.jsonl").write_text('{"class": "capital", "a": "France", "b": "Paris", "c": "Japan", "d": "Tokyo"}\n'
                                      '\n["cat", "cats", "dog", "dogs", "plural"]\n')
    (tmp_path / "q.csv").write_text("a,b,c,d,class\nsmall,smaller,big,bigger,comparative\n")
    (tmp_path / "q.tsv").write_text("function\ta\tb\tc\td\npast\twalk\twalked\tgo\twent\n")
    assert [q.words for q in load_quadruples(tmp_path / "q.jsonl")] == [("France", "Paris", "Japan", "Tokyo"),
                                                                        ("cat", "cats", "dog", "dogs")]
    assert load_quadruples(tmp_path / "q.csv")[0].function == "comparative"
    assert load_quadruples(tmp_path / "q.tsv")[0] == Quadruple("walk", "walked", "go", "went", "past",
                                                               f"{tmp_path / 'q.tsv'}:2")
    cases = {
        "missing.jsonl": (None, "does not exist"),
        "empty.jsonl": (b"", "holds no quadruples"),
        "bad.jsonl": (b'{"a": "x", "b": "y", "c": "z", "d": "w"}\n{oops\n', "bad.jsonl:2 is not valid JSON"),
        "nod.jsonl": (b'{"a": "x", "b": "y", "c": "z"}\n', "nod.jsonl:1: 'd' is missing"),
        "blank.jsonl": (b'{"a": "x", "b": " ", "c": "z", "d": "w"}\n', "'b' is ' '"),
        "list.jsonl": (b'[1, 2]\n', "not a JSON object"),
        "cols.csv": (b"a,b,c,d\nx,y,z\n", "cols.csv:2 has 3 columns"),
        "header.csv": (b"a,b,d\nx,y,z\n", "lacks the column(s) c"),
        "latin.tsv": ("a\tb\tc\td\nna\u00efve\tb\tc\td\n".encode("latin-1"), "not UTF-8"),
        "binary.jsonl": (b"\x00\x01\x02" * 100, "binary"),
        "words.txt": (b"a b c d\n", "not a .jsonl, .csv or .tsv"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(GeometryError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_quadruples(path)


def test_geometry_on_models_same_model_gives_identical_curves(tiny_teacher, variant):
    quads = [Quadruple("the", "fox", "a", "dog", "x"), Quadruple("love", "kind", "gold", "time", "x"),
             Quadruple("quick", "lazy", "fast", "slow", "y")]
    same = geometry([tiny_teacher, tiny_teacher], "resid_post.1", quads)
    assert same.model_names == ["base", "variant"] and same.settings["hook"] == "resid_post.1"
    assert np.array_equal(same.loss["base"], same.loss["variant"])
    assert same.curve("base", "x") == same.curve("variant", "x") and same.curve("base")["fraction"][-1] == 1.0
    assert all(0 <= x <= 2 for x in same.loss["base"])
    diff = geometry({"base": tiny_teacher, "variant": variant}, "resid_post.2", quads, pca="quadruple")
    assert not np.allclose(diff.loss["base"], diff.loss["variant"])
    rows = diff.summary()
    assert [(r["class"], r["model"]) for r in rows][-2:] == [("all", "base"), ("all", "variant")]
    json.dumps(diff.to_json(), allow_nan=False)
    reps = word_representations(tiny_teacher, ["fox", "vegetables"], "resid_post.1", template="so, {word}",
                                reduce="mean")
    assert set(reps) == {"fox", "vegetables"} and reps["fox"].shape == (32,)
    with pytest.raises(GeometryError, match="must end with"):
        word_representations(tiny_teacher, ["fox"], "resid_post.1", template="{word} is")
    with pytest.raises(GeometryError, match="resid_post"):
        geometry([tiny_teacher], "mlp_out.1", quads)
    with pytest.raises(GeometryError, match="Layer 9"):
        geometry([tiny_teacher], "resid_post.9", quads)


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def saved_crosscoder(tmp_path):
    cc, _ = planted_crosscoder()
    return cc.save(tmp_path / "cc")


def test_cli_report_and_ablate(saved_crosscoder, tiny_model_dir, tmp_path, capsys):
    assert main(["crosscoder", "report", str(saved_crosscoder)]) == 0
    out = capsys.readouterr().out
    assert "latents per class" in out and "variant-only 1" in out and "shared 1" in out
    assert main(["crosscoder", "report", str(saved_crosscoder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["variant-only"] == 1 and data["top"]["variant-only"][0]["latent"] == 0

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    args = ["crosscoder", "ablate", str(saved_crosscoder), "--base", str(tiny_model_dir), "--variant",
            str(tiny_model_dir), "--corpus", str(corpus), "--top-frequency", "25"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "variant-only random-matched" in out and "top-25%-frequency" in out and "5 documents" in out
    assert main(args + ["--set", "rel>0.5", "--json", "--no-random"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["sets"]) == ["rel>0.5", "top-25%-frequency"] and data["sets"]["rel>0.5"] == [0]
    assert data["n_documents"] == 5 and set(data["histograms"]["rel>0.5"]) == set(METRICS)


def test_cli_geometry_same_model_twice(tiny_model_dir, tmp_path, capsys):
    quads = tmp_path / "q.tsv"
    quads.write_text("class\ta\tb\tc\td\nx\tthe\tfox\ta\tdog\nx\tlove\tkind\tgold\ttime\n")
    assert main(["crosscoder", "geometry", "--base", str(tiny_model_dir), "--variant", str(tiny_model_dir),
                 "--quadruples", str(quads), "--hook", "resid_post.1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["curves"]["base"] == data["curves"]["variant"]
    assert [r["median"] for r in data["summary"] if r["model"] == "base"] == \
           [r["median"] for r in data["summary"] if r["model"] == "variant"]
    assert main(["crosscoder", "geometry", "--base", str(tiny_model_dir), "--quadruples", str(quads),
                 "--hook", "resid_post.1"]) == 0
    assert "cumulative fraction" in capsys.readouterr().out


def test_cli_errors_are_messages(saved_crosscoder, tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["crosscoder"])
    assert exc.value.code == 2
    capsys.readouterr()

    def fails(argv, *needles):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and "error:" in err and "Traceback" not in err, err
        for needle in needles:
            assert needle in err, err

    fails(["crosscoder", "report", str(tmp_path / "nothing")], "does not exist")
    fails(["crosscoder", "report", str(saved_crosscoder), "--top", "0"], "--top must be at least 1")
    model = ["--base", str(tiny_model_dir), "--variant", str(tiny_model_dir)]
    fails(["crosscoder", "ablate", str(saved_crosscoder), *model, "--set", "favourites"],
          "does not name a latent set", "rel>0.5")
    fails(["crosscoder", "ablate", str(saved_crosscoder), *model, "--top-frequency", "x"], "not a number")
    fails(["crosscoder", "ablate", str(saved_crosscoder), *model, "--set", "base-only"], "holds no latents")
    fails(["crosscoder", "ablate", str(saved_crosscoder)], "No base model given", "--base")
    fails(["crosscoder", "ablate", str(saved_crosscoder), *model, "--hook", "resid_post.1"], "trained at resid_post.3")
    fails(["crosscoder", "reasoning", str(saved_crosscoder), *model, "--ratio", "0.5"], "--ratio")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c,d\nx,y\n")
    fails(["crosscoder", "geometry", "--base", str(tiny_model_dir), "--quadruples", str(bad)], "bad.csv:2")
    fails(["crosscoder", "geometry", "--base", str(tmp_path / "no-model")], "does not exist")
