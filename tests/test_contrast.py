"""Contrast vectors: AUC and ROC against hand counts, the direction against a hand computation,
threshold from the training rows only, save/load, and the messages for bad input."""

import itertools
import math

import pytest
import torch

from core.contrast import (ContrastVector, auc, contrast_features, contrast_vector, contrasts_dir,
                           evaluate_contrast, held_out_aucs, list_contrasts, roc_curve, split_held_out,
                           youden_threshold)
from core.errors import DistillscopeError


def brute_auc(scores, pos):
    """Every (positive, negative) pair: 1 if the positive is higher, 1/2 on a tie."""
    p = [s for s, y in zip(scores, pos) if y]
    n = [s for s, y in zip(scores, pos) if not y]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(p, n)) / (len(p) * len(n))


def test_auc_hand_cases():
    assert auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert auc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    # positives 0.8, 0.4; negatives 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) = 3/4
    assert auc([0.8, 0.6, 0.4, 0.2], [1, 0, 1, 0]) == 0.75
    # all tied: every pair counts 1/2
    assert auc([1, 1, 1, 1, 1], [1, 0, 1, 0, 0]) == 0.5
    # positives 2, 1; negatives 1, 0: (2>1, 2>0, 1=1 -> 1/2, 1>0) = 3.5/4
    assert auc([2, 1, 1, 0], [1, 1, 0, 0]) == 0.875


def test_auc_matches_brute_force_on_random_ties():
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        n = int(torch.randint(4, 60, (1,), generator=gen))
        s = torch.randint(0, 6, (n,), generator=gen).float()  # few values: many ties
        y = torch.rand(n, generator=gen) < 0.4
        y[0], y[1] = True, False
        assert auc(s, y) == pytest.approx(brute_auc(s.tolist(), y.tolist()), abs=1e-12)


def test_roc_endpoints_monotone_and_area_is_auc():
    gen = torch.Generator().manual_seed(2)
    s = torch.randint(0, 10, (80,), generator=gen).float()
    y = torch.rand(80, generator=gen) < 0.5
    fpr, tpr, thr = roc_curve(s, y)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert thr[0] == math.inf
    assert (fpr.diff() >= 0).all() and (tpr.diff() >= 0).all() and (thr.diff() < 0).all()
    # one point per distinct score: ties are one (diagonal) step
    assert len(thr) == len(torch.unique(s)) + 1
    area = float(torch.trapezoid(tpr, fpr))
    assert area == pytest.approx(auc(s, y), abs=1e-12)


def test_roc_hand_case():
    fpr, tpr, thr = roc_curve([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert thr.tolist() == [math.inf, 0.9, 0.5, 0.1]
    assert tpr.tolist() == [0, 0.5, 1, 1]
    assert fpr.tolist() == [0, 0, 0.5, 1]


def test_auc_needs_both_classes_and_finite_scores():
    with pytest.raises(DistillscopeError, match="both classes"):
        auc([1, 2, 3], [1, 1, 1])
    with pytest.raises(DistillscopeError, match="not finite"):
        auc([1, float("nan"), 3], [1, 0, 1])


def test_contrast_vector_by_hand_one_vs_one_and_vs_rest():
    x = torch.tensor([[2.0, 0.0], [4.0, 2.0],    # a: mean (3, 1)
                      [0.0, 0.0], [0.0, 2.0],    # b: mean (0, 1)
                      [3.0, 5.0], [3.0, 3.0]])   # c: mean (3, 4)
    labels = ["a", "a", "b", "b", "c", "c"]
    cv = contrast_vector(x, labels, "a", "b")
    assert torch.allclose(cv.vector, torch.tensor([1.0, 0.0]))  # (3,1) - (0,1) = (3,0)
    assert cv.negative == "b" and cv.n_per_class == {"a": 2, "b": 2}
    rest = contrast_vector(x, labels, "a")
    # rest = b and c: mean (1.5, 2.5); (3,1) - (1.5,2.5) = (1.5,-1.5) -> (1,-1)/sqrt 2
    assert torch.allclose(rest.vector, torch.tensor([1.0, -1.0]) / math.sqrt(2))
    assert rest.negative == "rest" and rest.n_per_class == {"a": 2, "rest": 4}
    assert rest.name == "a vs rest"
    # against the rest when the rest is one class: that class is named
    two = contrast_vector(x[:4], labels[:4], "a")
    assert two.negative == "b" and two.name == "a vs b" and torch.equal(two.vector, cv.vector)
    assert two.classify(x[:4]) == ["a", "a", "b", "b"]
    # unlabeled rows (None or "") are on neither side
    unl = contrast_vector(x, labels[:4] + [None, ""], "a")
    assert unl.negative == "b" and unl.n_per_class == {"a": 2, "b": 2}
    assert float(rest.vector.norm()) == pytest.approx(1.0)
    # scores are dot products
    assert torch.allclose(cv.score(x), x[:, 0])


def test_threshold_from_training_rows_and_classify():
    # Training: a at 2, 3 and b at 0, 1 on axis 0 -> threshold midway between 2 and 1.
    x = torch.tensor([[2.0, 0], [3, 0], [0, 0], [1, 0],  # training
                      [1.2, 0], [10, 0]])                # held out: a b-like a, a far b
    labels = ["a", "a", "b", "b", "a", "b"]
    held = torch.tensor([0, 0, 0, 0, 1, 1], dtype=torch.bool)
    ev = evaluate_contrast(x, labels, "a", "b", held)
    cv = ev.contrast
    assert torch.allclose(cv.vector, torch.tensor([1.0, 0.0]))  # training means (2.5,0), (0.5,0)
    assert cv.threshold == pytest.approx(1.5)  # held-out rows did not move it
    assert cv.train_auc == 1.0
    assert ev.held_out_auc == 0.0  # the held-out a scores below the held-out b
    assert ev.n_held_out == {"a": 1, "b": 1}
    assert ev.scores["a"].tolist() == pytest.approx([1.2])
    assert cv.classify(torch.tensor([[1.6, 0.0], [1.4, 0.0]])) == ["a", "b"]


def test_youden_threshold_separates():
    t = youden_threshold([5, 4, 3, 1, 0], [1, 1, 1, 0, 0])
    assert t == pytest.approx(2.0)


def test_split_held_out_is_stratified_and_deterministic():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"]
    held = split_held_out(labels, 0.2, seed=3)
    assert int(held[:10].sum()) == 2 and int(held[10:15].sum()) == 1 and not held[15]
    assert torch.equal(held, split_held_out(labels, 0.2, seed=3))


def test_evaluate_on_separable_gaussians():
    gen = torch.Generator().manual_seed(0)
    d = 16
    shift = torch.zeros(d)
    shift[3] = 3.0
    x = torch.randn(200, d, generator=gen)
    labels = ["pos"] * 100 + ["neg"] * 100
    x[:100] += shift
    ev = evaluate_contrast(x, labels, "pos", "neg", split_held_out(labels, 0.3))
    assert ev.held_out_auc > 0.95
    assert int(ev.contrast.vector.abs().argmax()) == 3


def test_held_out_aucs_over_random_splits():
    labels = ["pos"] * 40 + ["neg"] * 40
    separable = torch.zeros(80, 4)
    separable[:40, 0] = 1.0 + torch.arange(40) / 40  # every positive above every negative
    assert held_out_aucs(separable, labels, "pos", "neg", 0.25, splits=5).tolist() == [1.0] * 5
    noise = torch.randn(80, 8, generator=torch.Generator().manual_seed(1))
    aucs = held_out_aucs(noise, labels, "pos", None, 0.25, splits=40)
    # the first is split 0's; on noise the splits scatter around chance
    assert float(aucs[0]) == evaluate_contrast(noise, labels, "pos", None, split_held_out(labels, 0.25)).held_out_auc
    assert float(aucs.std()) > 0.05 and abs(float(aucs.mean()) - 0.5) < 0.1
    with pytest.raises(ValueError, match="one split"):
        held_out_aucs(noise, labels, "pos", None, splits=0)


def test_save_load_round_trip(tmp_path):
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(4))
    labels = ["h", "m"] * 6
    cv = contrast_vector(x, labels, "m", name="machine vs human / test", space="teacher resid_post.6 abc",
                         corpus="provenance.jsonl")
    cv.held_out_auc = 0.9
    path = cv.save(contrasts_dir())
    assert path.parent == contrasts_dir() and path.name.endswith(".contrast.safetensors")
    assert list_contrasts() == [path]
    back = ContrastVector.load(path)
    assert torch.equal(back.vector, cv.vector)
    for f in ("name", "positive", "negative", "space", "corpus", "n_per_class", "train_auc",
              "held_out_auc", "threshold"):
        assert getattr(back, f) == getattr(cv, f), f
    # an explicit file name is used as given
    other = cv.save(tmp_path / "x.safetensors")
    assert other == tmp_path / "x.safetensors" and ContrastVector.load(other).name == cv.name
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_load_bad_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(DistillscopeError, match="does not exist"):
        ContrastVector.load(tmp_path / "nope.contrast.safetensors")
    junk = tmp_path / "junk.contrast.safetensors"
    junk.write_bytes(b"\x00\x01not safetensors")
    with pytest.raises(DistillscopeError, match="not a readable contrast"):
        ContrastVector.load(junk)
    other = tmp_path / "other.safetensors"
    save_file({"vector": torch.zeros(3)}, str(other))
    with pytest.raises(DistillscopeError, match="not a distillscope contrast"):
        ContrastVector.load(other)
    broken = tmp_path / "broken.safetensors"
    save_file({"vector": torch.zeros(3)}, str(broken), metadata={"format": "distillscope-contrast/1",
                                                                 "json": "{not json"})
    with pytest.raises(DistillscopeError, match="malformed metadata"):
        ContrastVector.load(broken)


def test_bad_input_messages():
    x = torch.randn(4, 3)
    with pytest.raises(DistillscopeError, match="two classes"):
        contrast_vector(x, ["a"] * 4, "a")
    with pytest.raises(DistillscopeError, match="No document is labeled 'z'"):
        contrast_vector(x, ["a", "a", "b", "b"], "z")
    with pytest.raises(DistillscopeError, match="No document is labeled 'q'"):
        contrast_vector(x, ["a", "a", "b", "b"], "a", "q")
    with pytest.raises(DistillscopeError, match="Both sides"):
        contrast_vector(x, ["a", "a", "b", "b"], "a", "a")
    nan = x.clone()
    nan[1, 2] = float("nan")
    with pytest.raises(DistillscopeError, match="NaN"):
        contrast_vector(nan, ["a", "a", "b", "b"], "a")
    same = torch.ones(4, 3)
    with pytest.raises(DistillscopeError, match="identical"):
        contrast_vector(same, ["a", "a", "b", "b"], "a")
    with pytest.raises(DistillscopeError, match="training rows"):  # every 'a' held out
        evaluate_contrast(x, ["a", "b", "b", "c"], "a", None, torch.tensor([1, 0, 1, 0]).bool())
    with pytest.raises(DistillscopeError, match="held-out"):
        evaluate_contrast(x, ["a", "a", "b", "b"], "a", "b", torch.tensor([1, 0, 0, 0]).bool())
    cv = contrast_vector(x, ["a", "a", "b", "b"], "a")
    with pytest.raises(DistillscopeError, match="width"):
        cv.score(torch.randn(2, 7))


def test_contrast_features_is_projection_onto_unit_decoder_rows():
    class Dict:  # the two attributes projection reads
        d_in = 2
        W_dec = torch.tensor([[2.0, 0.0], [0.0, -3.0], [1.0, 1.0]])

    cv = ContrastVector("t", torch.tensor([0.6, 0.8]), "a")
    fs = contrast_features(cv, Dict())
    assert fs.method == "projection"
    assert fs.values.tolist() == pytest.approx([0.6, -0.8, 1.4 / math.sqrt(2)])
    assert fs.top(1, by="value") == [2]
    with pytest.raises(DistillscopeError, match="width"):
        contrast_features(ContrastVector("t", torch.ones(3), "a"), Dict())
