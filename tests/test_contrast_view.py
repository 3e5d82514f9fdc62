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


# ============================================================================ teacher vs student


@pytest.fixture
def student_dir(tiny_teacher, tmp_path):
    """An (untrained) tiny student of the tiny teacher at the window's layer, saved as a run would."""
    from core.student import Student, StudentConfig, StudentModel
    from core.student.data import document_reference

    torch.manual_seed(0)
    cfg = StudentConfig(n_layers=1, d_hidden=16, n_heads=2, d_embed=8, d_mlp=32, max_positions=256)
    model = StudentModel(cfg, len(tiny_teacher.tokenizer), tiny_teacher.d_model, tiny_teacher.bos_id)
    ref = document_reference(torch.randn(20, tiny_teacher.d_model), "test", f"resid_post.{LAYER}")
    student = Student(model, tiny_teacher.tokenizer, ref, f"resid_post.{LAYER}", tiny_teacher.identity())
    return student.save(tmp_path / "run" / "artifacts" / "student")


def test_student_bars_go_beside_the_teachers_with_their_agreement(qtbot, probe, make_window, tiny_teacher,  # noqa: F811
                                                                   sae_dir, student_dir):  # noqa: F811
    from core.agreement import feature_correlation, top_k_overlap
    from core.features import projection_scores
    from core.student import Student
    from tests.test_feature_view import corpus_reference, select

    window = make_window(teacher=tiny_teacher, dictionary=str(sae_dir))
    d = loaded(qtbot, window)
    open_demo(qtbot, window)
    with qtbot.waitSignal(window.student_changed, timeout=TIMEOUT_MS):
        window.open_student(str(student_dir))
    assert window.features.bars.compare == ("student", "")
    select(qtbot, window, 3)
    bars = window.features.bars
    qtbot.waitUntil(lambda: bars.other is not None, timeout=TIMEOUT_MS)
    doc = window.entries[3].doc
    ref = corpus_reference(window)
    student = Student.load(student_dir)
    expected = projection_scores(student.vectors([doc.text], raw=True)[0], d.sae, ref.mean, ref.std).values
    assert bars.other == pytest.approx(expected.numpy(), rel=1e-4, abs=1e-5)
    t = torch.as_tensor(bars.values)[None]
    s = torch.as_tensor(bars.other)[None]
    r, _ = feature_correlation(t, s)
    overlap, _ = top_k_overlap(t, s, 20)
    assert f"r = {r:.2f}" in bars.note.text() and f"top-20 overlap {overlap:.2f}" in bars.note.text()
    assert bars.header.text() == f"Features of {doc.id} vs student"
    # Rows are the top features of either side.
    key = torch.maximum(t.abs(), s.abs())[0]
    assert [row.feature for row in bars.rows[:5]] == torch.sort(-key, stable=True).indices[:5].tolist()
    # The contrast tab offers the student's vectors too; closing the student takes it away.
    assert window.contrast.view.space.findData("student") >= 0
    window.set_student(None)
    assert bars.compare == ("none", "") and window.contrast.view.space.findData("student") < 0


def test_features_cli_scores_a_document_with_a_student(tiny_teacher, sae_dir, student_dir, tmp_path, capsys):  # noqa: F811
    """`distillscope features FILE --model STUDENT` projects the student's vector like the app."""
    import json

    from core.cli import main
    from core.features import load_reference, projection_scores, save_reference
    from core.features.scoring import Reference
    from core.student import Student

    ref = Reference(torch.randn(tiny_teacher.d_model), torch.rand(tiny_teacher.d_model) + 0.5, "test")
    save_reference(sae_dir, ref)
    text = "love is kind and the quick brown fox"
    (tmp_path / "doc.txt").write_text(text)
    assert main(["features", str(tmp_path / "doc.txt"), "--model", str(student_dir),
                 "--dictionary", str(sae_dir), "--json", "--top", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    from core.dictionaries import load

    student = Student.load(student_dir)
    ref = load_reference(sae_dir)
    expected = projection_scores(student.vectors([text], raw=True)[0], load(sae_dir), ref.mean, ref.std)
    got = out["documents"][0]["features"]
    assert [r["feature"] for r in got] == expected.top(5, "abs")
    assert [r["score"] for r in got] == pytest.approx([float(expected.values[f]) for f in expected.top(5, "abs")],
                                                     rel=1e-4)
    assert main(["features", str(tmp_path / "doc.txt"), "--model", str(student_dir), "--dictionary",
                 str(sae_dir), "--method", "tokens"]) == 2
    assert "token activations" in capsys.readouterr().err
