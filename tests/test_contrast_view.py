"""The Contrast tab through the real main window (pytest-qt, offscreen) on the tiny teacher: the
AUC, ROC and histograms shown are core.contrast's on the same vectors and split, the features are
the contrast's projection, a pasted text is classified as core would, and save/export write files."""

import csv

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

import torch  # noqa: E402

from core.contrast import ContrastVector, contrast_features, evaluate_contrast, split_held_out  # noqa: E402
from tests.test_feature_view import LAYER, TIMEOUT_MS, loaded, open_demo, probe, sae_dir  # noqa: E402,F401


@pytest.fixture
def contrast_ready(qtbot, probe, make_window, tiny_teacher, sae_dir):  # noqa: F811
    window = make_window(teacher=tiny_teacher, dictionary=str(sae_dir))
    loaded(qtbot, window)
    open_demo(qtbot, window)
    window.tabs.setCurrentIndex(2)
    return window


def test_contrast_tab_shows_what_core_computes(qtbot, contrast_ready, probe, tmp_path):  # noqa: F811
    window = contrast_ready
    view, session = window.contrast.view, window.contrast
    assert view.compute_button.isEnabled()
    labels_available = [view.positive.itemData(i) for i in range(view.positive.count())]
    positive = labels_available[0]
    view.positive.setCurrentIndex(0)
    view.negative.setCurrentIndex(0)  # the rest
    with qtbot.waitSignal(session.computed, timeout=TIMEOUT_MS):
        view.compute_button.click()
    # The same numbers from core directly.
    cv_corpus = window._vectors[LAYER]
    by_id = {d.id: d.label for d in window.corpus.documents}
    labels = [by_id[i] for i in cv_corpus.ids]
    ev = evaluate_contrast(cv_corpus.z, labels, positive, None, split_held_out(labels, 0.2))
    r = view.result
    assert r.auc == pytest.approx(ev.held_out_auc)
    assert r.threshold == pytest.approx(ev.contrast.threshold)
    assert list(r.fpr) == pytest.approx(ev.fpr.tolist()) and list(r.tpr) == pytest.approx(ev.tpr.tolist())
    assert f"{ev.held_out_auc:.3f}" in view.summary.text()
    x, y = view.roc_curve.getData()
    assert list(x) == pytest.approx(ev.fpr.tolist())
    counts = [int(item.getData()[1].sum()) for item in view.hist_items]
    assert counts == [ev.n_held_out[positive], ev.n_held_out["rest"]]
    # The bars are the contrast's projection on the dictionary, largest |value| first.
    values = contrast_features(ev.contrast, window.features.dictionary.sae).values
    top = torch.sort(-values.abs(), stable=True).indices[:5].tolist()
    assert [row.feature for row in view.chart.rows[:5]] == top

    # Classify a pasted text: the score is the dot product of its z-vector with the contrast.
    text = window.corpus.documents[0].text
    view.text.setPlainText(text)
    with qtbot.waitSignal(session.classified, timeout=TIMEOUT_MS):
        view.classify_button.click()
    from core.activations import document_activations
    from core.similarity import zscore
    doc = document_activations(probe, text, f"resid_post.{LAYER}", 2048)
    z = zscore(doc.acts[1:].mean(0), cv_corpus.mean, cv_corpus.std)
    score = float(ev.contrast.score(z))
    assert f"{score:.3g}" in view.verdict.text()
    assert ev.contrast.classify(z)[0] in view.verdict.text()

    # Save, then export the CSV.
    with qtbot.waitSignal(view.save_button.clicked, timeout=1000):
        view.save_button.click()
    qtbot.waitUntil(lambda: bool(view.result.saved_to), timeout=TIMEOUT_MS)
    saved = ContrastVector.load(view.result.saved_to)
    assert torch.allclose(saved.vector, ev.contrast.vector, atol=1e-6)
    out = session.export(str(tmp_path / "contrast.csv"))
    rows = list(csv.DictReader(open(out)))
    assert sum(1 for row in rows if row["kind"] == "roc") == len(ev.fpr)
    assert sum(1 for row in rows if row["kind"] == "score") == sum(ev.n_held_out.values())


def test_contrast_tab_explains_what_it_needs(make_window):
    window = make_window(dictionary=None)
    view = window.contrast.view
    assert not view.compute_button.isEnabled()
    assert "two labels" in view.summary.text()
