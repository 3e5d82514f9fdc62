"""Agreement metrics (seed 000) on hand-computed toy matrices, a synthetic student that degrades
with noise, and the committed provenance and out-of-distribution demo corpora."""

import math

import pytest
import torch

from core.agreement import (agreement_report, chance_agreement, feature_correlation, feature_scores,
                            mean_cosine, other_documents, row_cosines, top_k_overlap)
from core.contrast import split_held_out
from core.errors import DistillscopeError
from core.paths import resources_dir


def test_mean_cosine_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = torch.tensor([[2.0, 0.0], [1.0, -1.0], [0.0, -1.0]])
    assert row_cosines(a, b).tolist() == pytest.approx([1.0, 0.0, -1.0])
    assert mean_cosine(a, b) == pytest.approx(0.0)
    assert mean_cosine(a, 3 * a) == pytest.approx(1.0)
    # a zero row has no direction: counted as 0, not NaN
    assert row_cosines(torch.zeros(1, 2), torch.ones(1, 2)).tolist() == [0.0]


def test_feature_scores_is_projection():
    z = torch.tensor([[1.0, 2.0]])
    dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    assert feature_scores(z, dirs)[0].tolist() == pytest.approx([1.0, 2.0, 2.2])
    with pytest.raises(DistillscopeError, match="cannot be projected"):
        feature_scores(torch.ones(2, 3), dirs)


def test_feature_correlation_by_hand():
    t = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 0.0, 1.0]])
    s = torch.tensor([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0], [5.0, 5.0, 5.0]])
    mean, per_doc = feature_correlation(t, s)
    # doc 0: perfectly linear (+1); doc 1: reversed (-1); doc 2: student constant -> 0
    assert per_doc.tolist() == pytest.approx([1.0, -1.0, 0.0])
    assert mean == pytest.approx(0.0)
    # a hand Pearson: x = (1, 2, 4), y = (1, 3, 2): dx = (-4/3, -1/3, 5/3), dy = (-1, 1, 0)
    # cov = 4/3 - 1/3 = 1; |dx| = sqrt(42)/3, |dy| = sqrt 2 -> r = 3 / sqrt(84)
    _, r = feature_correlation(torch.tensor([[1.0, 2.0, 4.0]]), torch.tensor([[1.0, 3.0, 2.0]]))
    assert float(r[0]) == pytest.approx(3 / math.sqrt(84))


def test_top_k_overlap_by_hand():
    t = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0],
                      [5.0, 4.0, 3.0, 2.0, 1.0]])
    s = torch.tensor([[5.0, 1.0, 4.0, 2.0, 3.0],     # top-2 {0, 2} vs {0, 1}: 1/2
                      [-9.0, -8.0, 1.0, 2.0, 0.0]])  # signed: top-2 {3, 2} vs {0, 1}: 0
    mean, per_doc = top_k_overlap(t, s, k=2)
    assert per_doc.tolist() == [0.5, 0.0]
    assert mean == 0.25
    # by |score| the second would be {0, 1} = full overlap; the signed ranking is documented
    assert top_k_overlap(t, s, k=5)[1].tolist() == [1.0, 1.0]
    with pytest.raises(DistillscopeError, match="k <="):
        top_k_overlap(t, s, k=6)


def test_chance_pairs_each_document_with_another():
    for n in (2, 3, 50):
        partner = other_documents(n)
        assert sorted(partner.tolist()) == list(range(n))  # each student vector used once
        assert all(partner[i] != i for i in range(n))
        assert torch.equal(partner, other_documents(n))  # fixed by its seed
    with pytest.raises(DistillscopeError, match="two documents"):
        other_documents(1)
    # Two documents: each teacher vector meets the other's student vector. Document 0 points
    # along x, document 1 along y, the student is exact: matched cosine 1, at chance 0.
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    chance = chance_agreement(t, t.clone(), dirs, k=1)
    assert chance["cosine"] == pytest.approx(0.0)
    # scores (1, 0, .6) against (0, 1, .8): dx = (7, -8, 1)/15, dy = (-3, 2, 1)/5,
    # cov = -36/75, |dx|^2 = 114/225, |dy|^2 = 14/25
    r = (-36 / 75) / math.sqrt(114 / 225 * 14 / 25)
    assert chance["correlation"] == pytest.approx(r) and r == pytest.approx(-0.901, abs=1e-3)
    assert chance["overlap"] == 0.0  # top-1: feature 0 against feature 1
    assert chance_agreement(t[:1], t[:1], dirs) == {}
    # A shared offset (every document leaves the reference the same way) agrees at chance too.
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=1)
    noise = torch.randn(200, 16, generator=g)
    shared = noise + 4 * torch.ones(16)
    assert chance_agreement(noise, noise, dirs)["overlap"] < 0.4 < chance_agreement(shared, shared, dirs)["overlap"]
    report = agreement_report(shared, shared, dirs)
    assert report.top_k_overlap == 1.0 and report.chance == chance_agreement(shared, shared, dirs)


def test_worst_documents_by_cosine():
    from core.agreement import AgreementReport

    cos, r, ov = torch.tensor([0.5, 0.1, 0.9, 0.1]), torch.tensor([0.6, 0.2, 0.95, 0.3]), torch.tensor([0.5, 0.0, 1.0, 0.1])
    report = AgreementReport(4, 0.4, 0.5, 0.4, 20, cos, r, ov, ids=["a", "b", "c", "d"])
    worst = report.worst(3)
    assert [w[0] for w in worst] == ["b", "d", "a"]  # ties keep document order
    assert worst[0][1:] == pytest.approx((0.1, 0.2, 0.0))
    assert report.worst(0) == [] and len(report.worst(10)) == 4
    report.ids = []  # saved before ids were kept: positions instead
    assert [w[0] for w in report.worst(2)] == ["#1", "#3"]


def test_shape_and_nan_messages():
    with pytest.raises(DistillscopeError, match="do not match"):
        mean_cosine(torch.ones(3, 4), torch.ones(2, 4))
    bad = torch.ones(2, 2)
    bad[0, 0] = float("nan")
    with pytest.raises(DistillscopeError, match="NaN"):
        feature_correlation(bad, torch.ones(2, 2))


def _synthetic(noise, n=300, d=32, f=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = ["pos"] * (n // 2) + ["neg"] * (n - n // 2)
    teacher = torch.randn(n, d, generator=gen)
    teacher[: n // 2, 0] += 2.0  # a class signal along one axis
    student = teacher + noise * torch.randn(n, d, generator=gen)
    dirs = torch.nn.functional.normalize(torch.randn(f, d, generator=gen), dim=1)
    return teacher, student, dirs, labels


def test_report_degrades_monotonically_with_noise():
    reports = []
    for noise in (0.0, 0.3, 1.0, 3.0):
        t, s, dirs, labels = _synthetic(noise)
        held = split_held_out(labels, 0.3, seed=1)
        reports.append(agreement_report(t, s, dirs, labels, "pos", held))
    first = reports[0]
    assert first.cosine == pytest.approx(1.0) and first.correlation == pytest.approx(1.0)
    assert first.top_k_overlap == 1.0 and first.auc_student == pytest.approx(first.auc_teacher)
    for metric in ("cosine", "correlation", "top_k_overlap", "auc_student"):
        values = [getattr(r, metric) for r in reports]
        assert all(a > b for a, b in zip(values, values[1:])), (metric, values)
    assert all(r.auc_teacher == first.auc_teacher for r in reports)  # the teacher does not change
    assert first.n_documents == int(held.sum()) == len(first.cosines) == len(first.overlaps)


def test_report_rows_carry_seed_values():
    t, s, dirs, labels = _synthetic(0.5)
    held = split_held_out(labels, 0.3)
    rows = agreement_report(t, s, dirs, labels, "pos", held).as_rows()
    names = [r[0] for r in rows]
    assert names[:3] == ["mean cosine (z-normalized)", "feature score correlation", "top-20 feature overlap"]
    assert [r[2] for r in rows] == [0.76, 0.79, 0.60, 0.95, 0.93]
    ood = agreement_report(t, s, dirs, in_distribution=False).as_rows()
    assert [r[2] for r in ood] == [None, 0.58, 0.32]
    assert all(isinstance(r[1], float) and isinstance(r[3], float) for r in ood)  # chance beside each
    assert [r[3] for r in rows[3:]] == [None, None]  # none for the AUCs (chance is 0.5)
    with pytest.raises(DistillscopeError, match="held-out split"):
        agreement_report(t, s, dirs, labels, "pos")



def test_committed_provenance_corpus_loads():
    from core.documents import load_paths

    corpus = load_paths([resources_dir() / "demo" / "provenance.jsonl"])
    assert not corpus.problems
    assert corpus.labels() == ["human", "machine"]
    counts = {lab: sum(d.label == lab for d in corpus) for lab in corpus.labels()}
    assert counts["human"] == counts["machine"] >= 200
    assert all(d.text.strip() for d in corpus)


def test_committed_ood_corpus_loads():
    from core.documents import load_paths

    corpus = load_paths([resources_dir() / "demo" / "ood.jsonl"])
    assert not corpus.problems
    assert len(corpus) >= 200 and len(corpus.labels()) >= 2
    words = [len(d.text.split()) for d in corpus]
    assert min(words) >= 30 and max(words) <= 300
