"""The agreement evaluation of a student (seed 000) on the tiny teacher: its numbers are
core.agreement's and core.contrast's on the same vectors, it round-trips through agreement.json,
the CLI's `agreement` and `classify` print them, saved contrasts carry their normalization, and
the Agreement tab shows exactly what core computed."""

import csv
import json

import pytest
import torch

from core.agreement import feature_correlation, feature_scores, mean_cosine, row_cosines, top_k_overlap
from core.contrast import ContrastVector, evaluate_contrast, split_held_out
from core.dictionaries import load
from core.documents import snippet
from core.errors import DistillscopeError
from core.features.scoring import unit_directions
from core.similarity import zscore
from core.student import Student, StudentConfig, StudentModel
from core.student.data import document_reference
from core.student.evaluation import (AUC_SPLITS, AgreementEvaluation, EvalSet, default_sets, evaluate_agreement,
                                     teacher_pooled)
from tests.test_feature_view import LAYER, make_sae

HOOK = f"resid_post.{LAYER}"


@pytest.fixture
def student_dir(tiny_teacher, tmp_path):
    """An untrained tiny student of the tiny teacher, saved with the training corpus it names."""
    torch.manual_seed(0)
    cfg = StudentConfig(n_layers=1, d_hidden=16, n_heads=2, d_embed=8, d_mlp=32, max_positions=256)
    model = StudentModel(cfg, len(tiny_teacher.tokenizer), tiny_teacher.d_model, tiny_teacher.bos_id)
    ref = document_reference(torch.randn(20, tiny_teacher.d_model) * 2 + 1, "test", HOOK)
    student = Student(model, tiny_teacher.tokenizer, ref, HOOK, tiny_teacher.identity(), 64,
                      info={"corpus": "demo", "eval_fraction": 0.1})
    return student.save(tmp_path / "run" / "artifacts" / "student")


@pytest.fixture
def sae_dir(tmp_path):
    return make_sae(tmp_path / "tiny-sae", hook=HOOK)


def test_default_sets_are_the_held_out_split_provenance_and_ood(student_dir):
    from core.documents import load_demo
    from core.jobs.sae_job import split_documents

    student = Student.load(student_dir)
    sets, seen = default_sets(student)
    assert [s.key for s in sets] == ["id", "contrast", "ood"]
    train, held = split_documents(load_demo().documents, 0.1)
    assert [d.id for d in sets[0].documents] == [d.id for d in held] and seen == {d.text for d in train}
    assert sets[1].positive == "machine" and sets[1].negative == "human" and len(sets[1].documents) == 600
    assert not sets[2].in_distribution and len(sets[2].documents) == 360
    student.info = {}
    with pytest.raises(DistillscopeError, match="which corpus"):
        default_sets(student)


def test_evaluation_is_the_agreement_maths_on_the_same_vectors(tiny_teacher, student_dir, sae_dir, tmp_path):
    from core.documents import load_demo

    student, sae = Student.load(student_dir), load(sae_dir)
    docs = load_demo("demo-provenance").documents[:80]
    ood = load_demo("demo-ood").documents[:30]
    sets = [EvalSet("contrast", "provenance", docs, True, "machine", "human"),
            EvalSet("ood", "docstrings", ood, False)]
    result = evaluate_agreement(student, tiny_teacher, sae, sets, k=5, seen_texts={docs[0].text})

    # By hand: both sides in the student's z-space, scored on the unit decoder directions.
    t = zscore(teacher_pooled(tiny_teacher, docs, HOOK, 64), student.reference.mean, student.reference.std)
    s = student.vectors([d.text for d in docs])
    report = result.reports["contrast"]
    assert report.n_documents == 80 and result.seen == {"contrast": 1, "ood": 0}
    assert report.cosine == pytest.approx(mean_cosine(t, s), abs=1e-5)
    dirs = unit_directions(sae)
    st, ss = feature_scores(t, dirs), feature_scores(s, dirs)
    assert report.correlation == pytest.approx(feature_correlation(st, ss)[0], abs=1e-5)
    assert report.top_k_overlap == pytest.approx(top_k_overlap(st, ss, 5)[0])
    # Each per-document value knows its document; the worst is the one of lowest cosine.
    assert report.ids == [d.id for d in docs]
    lowest = int(row_cosines(t, s).argmin())
    assert report.worst(1)[0][0] == docs[lowest].id
    assert report.worst(1)[0][1] == pytest.approx(float(row_cosines(t, s)[lowest]), abs=1e-5)
    labels = [d.label for d in docs]
    held = split_held_out(labels, 0.2)
    assert report.auc_teacher == pytest.approx(evaluate_contrast(t, labels, "machine", "human", held).held_out_auc)
    assert report.auc_student == pytest.approx(evaluate_contrast(s, labels, "machine", "human", held).held_out_auc)
    assert result.reports["ood"].auc_teacher is None and not result.reports["ood"].in_distribution
    # Beside split 0, the mean over random splits (seeds 0, 1, ...), each built as split 0 is.
    splits = report.auc_splits["student"]
    assert splits.numel() == AUC_SPLITS and float(splits[0]) == pytest.approx(report.auc_student)
    held_3 = split_held_out(labels, 0.2, seed=3)
    assert float(splits[3]) == pytest.approx(evaluate_contrast(s, labels, "machine", "human", held_3).held_out_auc, abs=1e-5)
    mean_row = {m: (ours, seed) for m, ours, seed, _ in report.as_rows()}[
        f"contrast AUC, student, {AUC_SPLITS}-split mean (sd {float(splits.std()):.3f})"]
    assert mean_row == (pytest.approx(float(splits.mean())), 0.93)
    assert result.reports["ood"].auc_splits == {}
    # The seed's out-of-distribution values go beside the OOD set, none for cosine.
    rows = {m: seed for m, _, seed, _ in result.reports["ood"].as_rows()}
    assert rows["feature score correlation"] == 0.58 and rows["mean cosine (z-normalized)"] is None

    path = result.save(tmp_path)
    back = AgreementEvaluation.load(tmp_path)
    assert path.name == "agreement.json" and [r[:2] for r in back.rows()] == [r[:2] for r in result.rows()]
    for (_, _, a, sa, ca), (_, _, b, sb, cb) in zip(back.rows(), result.rows()):
        assert a == pytest.approx(b) and sa == sb and ca == cb
    assert back.reports["contrast"].cosines.tolist() == pytest.approx(report.cosines.tolist(), abs=1e-4)
    assert back.reports["contrast"].ids == report.ids
    assert back.reports["contrast"].auc_splits["teacher"].tolist() == pytest.approx(
        report.auc_splits["teacher"].tolist(), abs=1e-5)
    assert AgreementEvaluation.load(tmp_path / "nowhere") is None
    (tmp_path / "agreement.json").write_text("{broken")
    with pytest.raises(DistillscopeError, match="cannot be read"):
        AgreementEvaluation.load(tmp_path)


def test_the_teacher_computes_at_the_precision_of_the_students_targets(tiny_teacher, student_dir, sae_dir,
                                                                        tmp_path):
    from core.documents import load_demo

    student, sae = Student.load(student_dir), load(sae_dir)
    sets = [EvalSet("ood", "docstrings", load_demo("demo-ood").documents[:20], False)]
    exact = evaluate_agreement(student, tiny_teacher, sae, sets, k=5)
    student.info = {**(student.info or {}), "precision": "fast"}
    fast = evaluate_agreement(student, tiny_teacher, sae, sets, k=5)
    assert exact.precision == "exact" and fast.precision == "fast"
    assert fast.reports["ood"].cosine == pytest.approx(exact.reports["ood"].cosine, abs=0.01)
    fast.save(tmp_path)
    assert AgreementEvaluation.load(tmp_path).precision == "fast"


def test_known_teacher_vectors_are_used_instead_of_running_the_teacher(tiny_teacher, student_dir, sae_dir,
                                                                       monkeypatch):
    """The student job passes its held-out targets: the teacher does not run again for them."""
    import core.student.evaluation as evaluation
    from core.documents import load_demo

    student, sae = Student.load(student_dir), load(sae_dir)
    docs = load_demo("demo-ood").documents[:20]
    raw = teacher_pooled(tiny_teacher, docs, HOOK, 64)
    expected = evaluate_agreement(student, tiny_teacher, sae, [EvalSet("id", "held out", docs, True)], k=5)

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran")
    monkeypatch.setattr(evaluation, "teacher_pooled", no_teacher)
    known = evaluate_agreement(student, tiny_teacher, sae, [EvalSet("id", "held out", docs, True, teacher_raw=raw)], k=5)
    assert known.reports["id"].cosine == pytest.approx(expected.reports["id"].cosine)
    shifted = evaluate_agreement(student, tiny_teacher, sae,
                                 [EvalSet("id", "held out", docs, True, teacher_raw=raw.flip(0))], k=5)
    assert shifted.reports["id"].cosine != pytest.approx(expected.reports["id"].cosine)


def test_a_dictionary_of_another_layer_is_refused(tiny_teacher, student_dir, tmp_path):
    student = Student.load(student_dir)
    other = load(make_sae(tmp_path / "other", hook="resid_post.1"))
    with pytest.raises(DistillscopeError, match="resid_post.1"):
        evaluate_agreement(student, tiny_teacher, other, [])


def test_agreement_and_classify_cli(tiny_teacher, student_dir, sae_dir, tmp_path, capsys):
    from core.cli import main

    # The CLI loads the student's teacher by its source; here that is the tiny teacher's folder.
    assert main(["agreement", str(student_dir), "--dictionary", str(sae_dir), "-k", "5",
                 "--ood", "none", "--worst", "2"]) == 0
    out = capsys.readouterr().out
    saved = AgreementEvaluation.load(student_dir)
    assert set(saved.reports) == {"id", "contrast"}
    assert f"{saved.reports['contrast'].auc_student:.3f}" in out and "(seed 0.93)" in out
    # --worst: per set, the documents of lowest cosine, by id
    for key, report in saved.reports.items():
        assert f"{saved.titles[key]}: the 2 documents of lowest cosine" in out
        texts = {d.id: d.text for d in next(s for s in default_sets(Student.load(student_dir))[0]
                                            if s.key == key).documents}
        for doc, cosine, _, _ in report.worst(2):
            line = next(line for line in out.splitlines() if line.split()[:2] == [doc, f"{cosine:.3f}"])
            assert line.endswith(snippet(texts[doc], 60))  # and the start of its text
    assert main(["agreement", str(student_dir), "--worst", "-1"]) == 2
    assert "--worst must be 0 or more" in capsys.readouterr().err

    text = tmp_path / "t.txt"
    text.write_text("A human wrote this sentence about a quiet garden in the morning.")
    assert main(["classify", str(text), "--model", str(student_dir), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    # The same contrast by hand: the provenance demo on the student's vectors, 80% of each class.
    from core.documents import load_demo

    docs = load_demo("demo-provenance").documents
    student = Student.load(student_dir)
    labels = [d.label for d in docs]
    ev = evaluate_contrast(student.vectors([d.text for d in docs]), labels, "machine", "human",
                           split_held_out(labels, 0.2))
    score = float(ev.contrast.score(student.vectors([text.read_text()]))[0])
    assert got["held_out_auc"] == pytest.approx(ev.held_out_auc)
    assert got["documents"][0]["score"] == pytest.approx(score, abs=1e-4)
    assert got["documents"][0]["label"] == ("machine" if score >= ev.contrast.threshold else "human")

    # A saved teacher-space contrast cannot be used on a student's vectors, and vice versa.
    cv = ContrastVector("t", torch.nn.functional.normalize(torch.randn(32), dim=0), "machine", "human",
                        space="teacher resid_post.3 x", hook=HOOK, mean=torch.zeros(32), std=torch.ones(32))
    saved_path = cv.save(tmp_path)
    assert main(["classify", str(text), "--model", str(student_dir), "--contrast", str(saved_path)]) == 2
    assert "teacher resid_post.3" in capsys.readouterr().err
    assert main(["classify", str(tmp_path / "missing.txt")]) == 2
    assert main(["agreement", str(tmp_path)]) == 2
    assert "not a student folder" in capsys.readouterr().err


def test_a_saved_contrast_keeps_its_normalization(tmp_path):
    cv = ContrastVector("m vs h", torch.tensor([0.6, 0.8]), "m", "h", space="teacher", hook="resid_post.6",
                        mean=torch.tensor([1.0, 2.0]), std=torch.tensor([2.0, 4.0]), threshold=0.5)
    back = ContrastVector.load(cv.save(tmp_path))
    assert back.hook == "resid_post.6" and back.threshold == 0.5
    raw = torch.tensor([[3.0, 6.0]])
    assert back.normalize(raw)[0].tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert back.score(back.normalize(raw)).tolist() == pytest.approx([1.4], abs=1e-5)
    plain = ContrastVector("p", torch.tensor([1.0, 0.0]), "a", "b")
    back = ContrastVector.load(plain.save(tmp_path))
    assert back.mean is None and back.normalize(raw) is raw


# ============================================================================ the Agreement tab


def test_agreement_tab_shows_what_core_computed(qtbot, make_window, tiny_teacher, student_dir, sae_dir, tmp_path):
    pytest.importorskip("pytestqt")
    from tests.test_feature_view import TIMEOUT_MS, loaded, open_demo

    window = make_window(teacher=tiny_teacher, dictionary=str(sae_dir))
    loaded(qtbot, window)
    view = window.agreement.view
    assert not view.evaluate_button.isEnabled()
    with qtbot.waitSignal(window.student_changed, timeout=TIMEOUT_MS):
        window.open_student(str(student_dir))
    qtbot.waitUntil(lambda: view.evaluate_button.isEnabled(), timeout=TIMEOUT_MS)
    assert "not evaluated yet" in view.summary.text()
    window.tabs.setCurrentIndex(3)
    with qtbot.waitSignal(window.agreement.shown, timeout=120_000):
        view.evaluate_button.click()
    saved = AgreementEvaluation.load(student_dir)
    rows = saved.rows()
    assert view.table.rowCount() == len(rows) + 3 == 3 + 7 + 3 + 3  # a title row per set
    shown = [r for r in range(view.table.rowCount()) if view.table.item(r, 1) is not None]
    assert view.table.item(0, 0).text().startswith(saved.titles["id"])
    for r, (_, metric, ours, seed, chance) in zip(shown, rows):
        assert view.table.item(r, 0).text().strip() == metric
        assert view.table.item(r, 1).text() == f"{ours:.3f}"
        assert view.table.item(r, 2).text() == (f"{seed:.2f}" if seed is not None else "")
        assert view.table.item(r, 3).text() == (f"{chance:.3f}" if chance is not None else "")
    assert sum(view.table.item(r, 3).text() != "" for r in shown) == 3 * 3  # cosine, r, overlap per set
    # Histograms: one curve per set, of the per-document values saved.
    curves = view.plots["cosines"].plotItem.listDataItems()
    assert len(curves) == 3
    assert sum(curves[0].getData()[1]) == pytest.approx(1.0)  # fractions of documents
    assert len(view.roc.plotItem.listDataItems()) == 3  # diagonal, teacher, student
    out = window.agreement.export(str(tmp_path / "a.csv"))
    lines = open(out, encoding="utf-8").read().splitlines()
    document_rows = [row for row in csv.reader(lines) if row[0] == "document"]
    assert document_rows and all(row[6] for row in document_rows)  # each with its document's id
    assert lines[0] == "kind,documents,metric,value,seed,chance,document" and sum(line.startswith("table,") for line in lines) == 13

    # The least agreeing documents of each set, lowest cosine first, with the start of their text;
    # double-clicking one shows it in Inspect beside the student's bars.
    from gui.agreement_view import WORST_ROWS

    assert [view.worst_set.itemData(i) for i in range(view.worst_set.count())] == ["id", "contrast", "ood"]
    view.worst_set.setCurrentIndex(1)
    report = saved.reports["contrast"]
    worst = report.worst(WORST_ROWS)
    assert view.worst.rowCount() == len(worst) == min(WORST_ROWS, report.n_documents)
    assert [view.worst.item(r, 0).text() for r in range(3)] == [doc for doc, *_ in worst[:3]]
    assert view.worst.item(0, 1).text() == f"{worst[0][1]:.3f}" and float(view.worst.item(0, 1).text()) <= \
        float(view.worst.item(len(worst) - 1, 1).text())
    qtbot.waitUntil(lambda: bool(view.documents), timeout=TIMEOUT_MS)
    docs = {d.id: d for d in default_sets(Student.load(student_dir))[0][1].documents}
    assert view.worst.item(0, 4).text() == snippet(docs[worst[0][0]].text, 200)
    open_demo(qtbot, window)  # its documents give the projection's reference (this dictionary ships none)
    n_entries = len(window.entries)
    view.worst.cellDoubleClicked.emit(0, 0)
    assert window.tabs.currentIndex() == 0 and len(window.entries) == n_entries + 1
    entry = window.entries[window.documents.current_row()]
    assert entry.doc == docs[worst[0][0]] and entry.corpus_index is None  # with its label
    assert f"cosine {worst[0][1]:.3f}, r {worst[0][2]:.3f}" in window.status.label.text()
    bars = window.features.bars
    qtbot.waitUntil(lambda: bars.header.text() == f"Features of {worst[0][0]} vs student", timeout=TIMEOUT_MS)
    assert bars.other is not None
    view.worst.cellDoubleClicked.emit(0, 0)  # the same document again: selected, not added twice
    assert len(window.entries) == n_entries + 1
    assert not window.agreement.open_document("contrast", "no-such-document")
    assert "not at hand" in view.summary.text() and len(window.entries) == n_entries + 1
    # An agreement file saved before ids were kept lists the documents by position, and opens none.
    old = saved.to_json()
    for s in old["sets"].values():
        del s["ids"]
    view.show_result(old)
    view.set_documents({"id": {}})
    assert view.worst.item(0, 0).text().startswith("#") and "evaluate again" in view.worst.item(0, 4).text()
    view.worst.cellDoubleClicked.emit(0, 0)
    assert len(window.entries) == n_entries + 1
    window.agreement.refresh()  # back to the saved evaluation, with ids
    view.worst_set.setCurrentIndex(1)
    qtbot.waitUntil(lambda: bool(view.documents.get("contrast")), timeout=TIMEOUT_MS)
    # A document of the open corpus is selected there, not added.
    window.open_demo("demo-provenance")
    qtbot.waitUntil(lambda: any(e.doc.id == worst[1][0] and e.corpus_index is not None for e in window.entries),
                    timeout=TIMEOUT_MS)
    n_entries = len(window.entries)
    view.worst.cellDoubleClicked.emit(1, 0)
    entry = window.entries[window.documents.current_row()]
    assert entry.doc.id == worst[1][0] and entry.corpus_index is not None and len(window.entries) == n_entries
    # Reopening the student shows the saved evaluation without computing it again.
    window.set_student(None)
    assert view.table.rowCount() == 0
    with qtbot.waitSignal(window.agreement.shown, timeout=TIMEOUT_MS):
        window.open_student(str(student_dir))
    assert view.table.rowCount() == 16


def test_agreement_files_from_before_the_chance_column_still_show():
    pytest.importorskip("pytestqt")
    from gui.agreement_view import set_rows

    old = {"rows": [["mean cosine (z-normalized)", 0.7, 0.76], ["contrast AUC, teacher", 0.9, 0.95]]}
    assert set_rows(old) == [("mean cosine (z-normalized)", 0.7, 0.76, None), ("contrast AUC, teacher", 0.9, 0.95, None)]
    assert set_rows({"rows": [["top-20 feature overlap", 0.5, 0.6, 0.02]]}) == [("top-20 feature overlap", 0.5, 0.6, 0.02)]


def test_contrast_tab_fine_tunes_a_head_on_the_same_split(qtbot, make_window, tiny_teacher, student_dir, sae_dir):
    pytest.importorskip("pytestqt")
    from core.contrast import roc_curve
    from core.student.classify_head import finetune_classifier
    from gui.contrast_session import head_split
    from tests.test_feature_view import TIMEOUT_MS, loaded, open_demo

    window = make_window(teacher=tiny_teacher, dictionary=str(sae_dir))
    loaded(qtbot, window)
    open_demo(qtbot, window)
    with qtbot.waitSignal(window.student_changed, timeout=TIMEOUT_MS):
        window.open_student(str(student_dir))
    view, session = window.contrast.view, window.contrast
    window.tabs.setCurrentIndex(2)
    view.space.setCurrentIndex(view.space.findData("teacher"))
    view.positive.setCurrentIndex(view.positive.findData("science"))
    with qtbot.waitSignal(session.computed, timeout=TIMEOUT_MS):
        view.compute_button.click()
    assert not view.head_button.isEnabled()  # a head is fine-tuned on a student only
    view.space.setCurrentIndex(view.space.findData("student"))
    with qtbot.waitSignal(session.computed, timeout=TIMEOUT_MS):
        view.compute_button.click()
    assert view.head_button.isEnabled()
    with qtbot.waitSignal(session.head_done, timeout=120_000):
        view.head_button.click()

    ev = session.evaluation
    texts = {d.id: d.text for d in window.corpus.documents}
    split = head_split(session.space.ids, session.labels, texts, "science", "rest")
    assert len(split[2]) == sum(ev.n_held_out.values()) and sum(split[3]) == ev.n_held_out["science"]
    result = finetune_classifier(Student.load(student_dir), *split)
    assert view.head_note == f"fine-tuned head: {result.auc:.3f}" or \
        abs(float(view.head_note.split(": ")[1]) - result.auc) < 0.02  # threads may round differently
    fpr, tpr, _ = roc_curve(result.scores, split[3])
    x, y = view.head_curve.getData()
    assert len(x) > 2 and x[-1] == pytest.approx(1.0) and y[-1] == pytest.approx(1.0)
    assert abs(len(x) - len(fpr)) <= 2 and len(tpr) == len(fpr)  # the same held-out documents
    assert "held-out AUC" in view.summary.text() and "classification head" in view.summary.text()
