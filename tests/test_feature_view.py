"""Feature bars, token highlighting, dashboards, labels, search, compare and export, driven through
the real main window (pytest-qt, offscreen) on the tiny teacher and a tiny TopK SAE saved in tmp.

Every number shown is checked against core.features computed directly: the bars' top features,
the token colours, the dashboard's contexts and the search hits.
"""

import csv
import json
import math
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

import torch  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from core.dictionaries import SAEConfig, create  # noqa: E402
from core.features import (Reference, class_vector, compare, document_scores,  # noqa: E402
                           encode_tokens, load_labels, projection_scores)

TIMEOUT_MS = 60_000
LAYER = 3  # the tiny teacher's last layer: the window clamps its layer 6 to it


def make_sae(folder: Path, d_in: int = 32, d_sae: int = 64, hook: str = f"resid_post.{LAYER}", seed: int = 0) -> Path:
    sae = create(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=4, hook_name=hook), seed=seed)
    return sae.save(folder)


@pytest.fixture
def sae_dir(tmp_path):
    return make_sae(tmp_path / "tiny-sae")


def loaded(qtbot, window):
    qtbot.waitUntil(lambda: window.features.dictionary is not None and window.features.dictionary.hook is not None,
                    timeout=TIMEOUT_MS)
    return window.features.dictionary


def open_demo(qtbot, window, layer=LAYER):
    with qtbot.waitSignal(window.corpus_changed, timeout=TIMEOUT_MS):
        window.open_demo()
    qtbot.waitUntil(lambda: layer in window._vectors, timeout=TIMEOUT_MS)


def select(qtbot, window, row):
    window.documents.select_row(row)
    doc_id = window.entries[row].doc.id
    qtbot.waitUntil(lambda: bool(window.features.bars.rows)
                    and window.features.bars.header.text().startswith(f"Features of {doc_id}"), timeout=TIMEOUT_MS)


def wait_index(qtbot, window):
    qtbot.waitUntil(lambda: window.features.index() is not None, timeout=TIMEOUT_MS)
    return window.features.index()


def shown(window):
    return [r.feature for r in window.features.bars.rows]


def corpus_reference(window):
    cv = window._vectors[LAYER]
    return Reference(cv.mean, cv.std, "corpus")


@pytest.fixture(scope="session")
def probe(tiny_teacher):
    """A twin of the tiny teacher for the tests' own core calls: the window's worker threads run
    the teacher itself, and two threads must not hook one module at once (gui/shadow.py). Made
    before any window exists, so no worker's hooks are copied."""
    from gui.shadow import twins

    return twins(tiny_teacher)[1]


@pytest.fixture
def ready(qtbot, probe, make_window, tiny_teacher, sae_dir):
    """A window with the tiny teacher, the tiny SAE and the demo corpus, document 5 selected."""
    window = make_window(teacher=tiny_teacher, dictionary=str(sae_dir))
    d = loaded(qtbot, window)
    open_demo(qtbot, window)
    select(qtbot, window, 5)
    return window, d.sae


# ==================================================================================== the bars


def test_bars_show_the_top_features_core_computes(qtbot, ready, probe):
    window, sae = ready
    bars = window.features.bars
    doc = window.entries[5].doc
    n = bars.n_rows
    assert 15 <= n <= 30 and len(bars.rows) == n
    assert "resid_post.3" in bars.dictionary_label.text() and "64 features" in bars.dictionary_label.text()

    # Projection (the default): the seed-000 bridge against the open corpus' pooled statistics.
    assert bars.method == "projection"
    _, expected = document_scores(probe, sae, doc.text, corpus_reference(window), "projection")
    assert shown(window) == expected.top(n, by="abs")
    for row in bars.rows:
        assert row.value == pytest.approx(float(expected.values[row.feature]), abs=1e-4)
    assert any(r.value < 0 for r in bars.rows), "projection scores are signed"
    assert "945 documents" in bars.note.text() and "seed-000" in bars.explanation.text().lower()

    # Token scores: mean and max over the non-BOS tokens.
    _, tokens = document_scores(probe, sae, doc.text, None, "tokens")
    bars.set_method("tokens-mean")
    qtbot.waitUntil(lambda: shown(window) == tokens.top(n, by="value"), timeout=5_000)
    assert [r.value for r in bars.rows] == pytest.approx([float(tokens.values[f]) for f in shown(window)], abs=1e-4)
    assert "mean activation" in bars.explanation.text()
    bars.set_method("tokens-max")
    qtbot.waitUntil(lambda: shown(window) == tokens.top(n, by="peak"), timeout=5_000)
    assert "largest activation" in bars.explanation.text()

    # Fewer rows on request; the chart is one row high per feature.
    bars.rows_spin.setValue(15)
    assert shown(window) == tokens.top(15, by="peak")
    assert bars.chart.height() >= 15 * bars.chart.ROW_H


def test_feature_scored_in_the_token_views_pass(qtbot, make_window, tiny_teacher, sae_dir):
    """With the dictionary at the token view's layer, one inspector task gives both views."""
    window = make_window(teacher=tiny_teacher, dictionary=str(sae_dir))
    loaded(qtbot, window)
    open_demo(qtbot, window)
    submitted = []
    original = window.inspector.submit
    window.inspector.submit = lambda task: submitted.append(task.key) or original(task)
    select(qtbot, window, 12)
    assert submitted == ["tokens"]


def test_dictionary_at_another_layer_scores_separately(qtbot, probe, make_window, tiny_teacher, tmp_path):
    folder = make_sae(tmp_path / "sae-l1", hook="resid_post.1")
    window = make_window(teacher=tiny_teacher, dictionary=str(folder))
    d = loaded(qtbot, window)
    open_demo(qtbot, window)
    select(qtbot, window, 3)
    # Projection needs the corpus' vectors at layer 1: computed for the bars (the view shows 3).
    qtbot.waitUntil(lambda: 1 in window._vectors and "pooled at resid_post.1" in window.features.bars.note.text(),
                    timeout=TIMEOUT_MS)
    cv = window._vectors[1]
    _, expected = document_scores(probe, d.sae, window.entries[3].doc.text,
                                  Reference(cv.mean, cv.std, "x"), "projection")
    qtbot.waitUntil(lambda: shown(window) == expected.top(window.features.bars.n_rows), timeout=TIMEOUT_MS)


# ==================================================================================== selection, tokens, dashboard


def test_click_selects_highlights_tokens_and_opens_dashboard(qtbot, ready, probe):
    window, sae = ready
    index = wait_index(qtbot, window)
    bars, chart = window.features.bars, window.features.bars.chart
    bars.set_method("tokens-max")
    feature = bars.rows[2].feature
    with qtbot.waitSignal(window.features.dashboard_shown, timeout=TIMEOUT_MS):
        qtbot.mouseClick(chart, Qt.MouseButton.LeftButton, pos=chart.row_rect(2).center())
    assert window.features.feature == feature == bars.selected_feature
    assert window.features.dock.isVisible()

    # The tokens are coloured by the feature's activations, as core encodes the document.
    panel = window.token_panel
    doc = window.entries[5].doc
    acts, _ = document_scores(probe, sae, doc.text, None, "tokens")
    expected = encode_tokens(sae, acts.acts)[:, feature]
    expected[0] = 0  # BOS
    assert panel.feature == feature
    assert panel.values == pytest.approx(expected.tolist(), abs=1e-4)
    assert f"feature {feature}" in panel.caption.text() and f"feature {feature}" in panel.header.text()
    assert panel.hi_label.text().startswith(f"{float(index.max[feature]):.1f}")  # the corpus max

    # The dashboard: contexts from the index (not a teacher run), with every window's activations.
    dash = window.features.dashboard
    data = dash.data
    assert data.feature == feature and dash.title.text().startswith(f"Feature {feature}")
    assert data.count == int(index.count[feature]) and data.n_tokens == index.n_tokens
    contexts = index.contexts(feature, width=12, n=20)
    assert [(c.doc_id, c.position) for c in data.contexts] == [(c.doc_id, c.position) for c in contexts]
    assert all(c.acts[c.center] == pytest.approx(c.value) for c in data.contexts)
    first = data.contexts[0]
    assert "".join(first.tokens[first.center:first.center + 1]) in dash.contexts_text()
    assert len(data.hist_counts) == 40 and sum(data.hist_counts) == data.count
    assert len(data.promoted) == len(data.suppressed) == 10 and len(data.nearest) == 10
    assert data.promoted[0][1] >= data.promoted[-1][1] and data.suppressed[0][1] <= data.suppressed[-1][1]

    # Clear: back to residual norms.
    bars.clear_button.click()
    assert window.features.feature == -1 and panel.feature is None and panel.caption.text() == "residual norm"


def test_keyboard_moves_selection_and_enter_opens_dashboard(qtbot, ready):
    window, _ = ready
    wait_index(qtbot, window)
    bars, chart = window.features.bars, window.features.bars.chart
    chart.setFocus()
    qtbot.keyClick(chart, Qt.Key.Key_Down)
    assert bars.selected_feature == bars.rows[0].feature == window.features.feature
    qtbot.keyClick(chart, Qt.Key.Key_Down)
    qtbot.keyClick(chart, Qt.Key.Key_Down)
    qtbot.keyClick(chart, Qt.Key.Key_Up)
    assert bars.selected_feature == bars.rows[1].feature
    qtbot.waitUntil(lambda: window.token_panel.feature == bars.rows[1].feature, timeout=5_000)
    assert window.features.dock is None or not window.features.dock.isVisible()
    with qtbot.waitSignal(window.features.dashboard_shown, timeout=TIMEOUT_MS):
        qtbot.keyClick(chart, Qt.Key.Key_Return)
    assert window.features.dashboard.feature == bars.rows[1].feature
    # With the dashboard open it follows the selection.
    with qtbot.waitSignal(window.features.dashboard_shown, timeout=TIMEOUT_MS):
        qtbot.keyClick(chart, Qt.Key.Key_Down)
    assert window.features.dashboard.feature == bars.rows[2].feature


def test_nearest_feature_click_and_history(qtbot, ready):
    window, sae = ready
    wait_index(qtbot, window)
    first = window.features.bars.rows[0].feature
    with qtbot.waitSignal(window.features.dashboard_shown, timeout=TIMEOUT_MS):
        window.features.open_dashboard(first)
    dash = window.features.dashboard
    target = dash.data.nearest[0][0]
    with qtbot.waitSignal(window.features.dashboard_shown, timeout=TIMEOUT_MS):
        rect = dash.nearest.visualItemRect(dash.nearest.item(0, 2))
        qtbot.mouseClick(dash.nearest.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert dash.feature == target == window.features.feature
    with qtbot.waitSignal(window.features.dashboard_shown, timeout=TIMEOUT_MS):
        dash.back.click()
    assert dash.feature == first and dash.forward.isEnabled()


def test_context_link_opens_its_document(qtbot, ready):
    window, _ = ready
    wait_index(qtbot, window)
    with qtbot.waitSignal(window.features.dashboard_shown, timeout=TIMEOUT_MS):
        window.features.open_dashboard(window.features.bars.rows[0].feature)
    context = window.features.dashboard.data.contexts[0]
    assert context.corpus_index is not None
    from PySide6.QtCore import QUrl

    window.features.dashboard.contexts.anchorClicked.emit(QUrl(f"doc:{context.corpus_index}"))
    assert window.current_entry().doc.id == context.doc_id


# ==================================================================================== labels


def test_label_edit_is_saved_and_reloaded(qtbot, ready, make_window, tiny_teacher, sae_dir):
    window, _ = ready
    wait_index(qtbot, window)
    feature = window.features.bars.rows[0].feature
    with qtbot.waitSignal(window.features.dashboard_shown, timeout=TIMEOUT_MS):
        window.features.open_dashboard(feature)
    dash = window.features.dashboard
    assert dash.label_kind.text() == "auto" and dash.label_edit.text()  # from the index
    dash.label_edit.setFocus()
    dash.label_edit.selectAll()
    qtbot.keyClicks(dash.label_edit, "words about writing")
    qtbot.keyClick(dash.label_edit, Qt.Key.Key_Return)
    assert dash.label_kind.text() == "edited"
    saved = json.loads((sae_dir / "labels.json").read_text("utf-8"))
    assert saved["labels"][str(feature)] == {"text": "words about writing", "auto": False}
    assert load_labels(sae_dir).get(feature) == "words about writing"
    assert window.features.bars.rows[0].label == "words about writing"

    # A second window opening the same dictionary reads the edited label.
    other = make_window(teacher=tiny_teacher, dictionary=str(sae_dir))
    d = loaded(qtbot, other)
    assert d.labels.get(feature) == "words about writing" and d.labels.is_user(feature)

    # Back to the automatic label.
    dash.reset_button.click()
    assert dash.label_kind.text() == "auto"
    assert not load_labels(sae_dir).is_user(feature)


# ==================================================================================== search


def test_search_by_token_and_by_label(qtbot, ready, probe):
    window, _ = ready
    index = wait_index(qtbot, window)
    search = window.features.open_search()
    # The token search finds what the index says fires on ' the'.
    from core.features.labels import first_token

    token = first_token(probe, " the")
    expected = [h.feature for h in index.features_for_token(token, 20)]
    assert expected
    with qtbot.waitSignal(window.features.search_shown, timeout=TIMEOUT_MS):
        search.search("' the'", "token")
    assert [h.feature for h in search.hits] == expected
    assert "occurrences" in search.status.text()
    # Double-click opens the dashboard of the hit.
    with qtbot.waitSignal(window.features.dashboard_shown, timeout=TIMEOUT_MS):
        search.table.cellDoubleClicked.emit(1, 0)
    assert window.features.dashboard.feature == expected[1]

    # By label text: features whose (automatic) label contains the text.
    labels = window.features.dictionary.labels
    some = next(f for f in labels if labels.get(f))
    word = labels.get(some).split(" · ")[0]
    with qtbot.waitSignal(window.features.search_shown, timeout=5_000):
        search.search(word, "label")
    assert some in [h.feature for h in search.hits]
    assert all(word.casefold() in h.label.casefold() for h in search.hits)


def test_token_variants():
    from gui.feature_session import token_variants

    assert token_variants("because") == [" because", "because"]
    assert token_variants("' because'") == [" because"]
    assert token_variants(" because") == [" because"]
    assert token_variants("  ") == [] and token_variants("''") == []


# ==================================================================================== compare


def test_compare_with_a_document_and_a_class(qtbot, ready, probe):
    window, sae = ready
    bars = window.features.bars
    docs = window.entries
    ref = corpus_reference(window)
    _, a = document_scores(probe, sae, docs[5].doc.text, ref, "projection")
    _, b = document_scores(probe, sae, docs[40].doc.text, ref, "projection")

    bars.set_compare("document", "40")
    qtbot.waitUntil(lambda: bars.rows and bars.rows[0].other is not None, timeout=TIMEOUT_MS)
    assert bars.header.text() == f"Features of {docs[5].doc.id} vs {docs[40].doc.id}"
    assert shown(window) == [f for f, _, _ in compare(a, b, bars.n_rows)]
    for row in bars.rows:
        assert row.other == pytest.approx(float(b.values[row.feature]), abs=1e-4)
    assert bars.legend.isVisible() and bars.chart.compare

    # Against a labeled class: the mean of the class's raw pooled vectors, projected the same way.
    bars.set_compare("class", "science")
    qtbot.waitUntil(lambda: "class science" in bars.header.text(), timeout=TIMEOUT_MS)
    cv = window._vectors[LAYER]
    labels = {d.id: d.label for d in window.corpus.documents}
    science = projection_scores(class_vector(cv.raw, [labels[i] for i in cv.ids], "science"), sae, ref.mean, ref.std)
    assert shown(window) == [f for f, _, _ in compare(a, science, bars.n_rows)]

    # By token scores, from the corpus' token cache once the index is built.
    wait_index(qtbot, window)
    bars.set_method("tokens-mean")
    qtbot.waitUntil(lambda: bars.rows and bars.rows[0].other is not None and "class science" in bars.header.text(),
                    timeout=TIMEOUT_MS)
    assert all(r.other >= 0 for r in bars.rows)

    bars.set_compare("none")
    assert bars.rows[0].other is None and not bars.legend.isVisible()


def test_compare_picker_dialog(qtbot, ready):
    window, _ = ready
    bars = window.features.bars
    picker = bars.pick_document()
    qtbot.keyClicks(picker.filter, "sports-0003")
    assert picker.chosen() is not None
    picker.accept()
    row = next(i for i, e in enumerate(window.entries) if e.doc.id == "sports-0003")
    assert bars.compare == ("document", str(row))
    qtbot.waitUntil(lambda: "vs sports-0003" in bars.header.text(), timeout=TIMEOUT_MS)


# ==================================================================================== export


def test_exports(qtbot, ready, tmp_path):
    window, sae = ready
    session = window.features
    png = session.export_bars(str(tmp_path / "bars.png"))
    from PySide6.QtGui import QImage

    image = QImage(png)
    assert not image.isNull() and image.width() >= 1200  # 2x of a 640 px figure
    path = session.export_bars(str(tmp_path / "scores"), "csv")
    assert path.endswith(".csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sae.d_sae
    assert [int(r["feature"]) for r in rows[: len(session.bars.rows)]] == shown(window)
    assert all(math.isfinite(float(r["projection"])) for r in rows)
    assert float(rows[0]["projection"]) == pytest.approx(session.bars.rows[0].value)

    wait_index(qtbot, window)
    session.bars.set_compare("document", "9")
    qtbot.waitUntil(lambda: session.bars.rows and session.bars.rows[0].other is not None, timeout=TIMEOUT_MS)
    path = session.export_bars(str(tmp_path / "compare.csv"))
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {"projection_a", "projection_b", "difference", "frequency"} <= set(rows[0])
    assert float(rows[0]["frequency"]) >= 0 and rows[0]["label_kind"] in ("auto", "edited", "")

    with qtbot.waitSignal(session.dashboard_shown, timeout=TIMEOUT_MS):
        session.open_dashboard(session.bars.rows[0].feature)
    dash_png = session.export_dashboard(str(tmp_path / "dash.png"), "png")
    assert not QImage(dash_png).isNull()
    contexts = session.export_dashboard(str(tmp_path / "contexts.csv"), "csv")
    with open(contexts, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(session.dashboard.data.contexts) and float(rows[0]["activation"]) > 0

    # An unwritable place: an error box, no traceback.
    assert session.export_bars(str(tmp_path / "missing" / "x.png")) is None
    assert "Could not write" in window.error_box.text()
    window.error_box.close()


# ==================================================================================== dictionaries


def test_dictionary_that_does_not_fit_says_why(qtbot, make_window, tiny_teacher, tmp_path):
    folder = make_sae(tmp_path / "wide", d_in=48)
    window = make_window(teacher=tiny_teacher, dictionary=None)
    window.features.open_dictionary(folder)
    qtbot.waitUntil(lambda: window.error_box is not None and window.error_box.isVisible(), timeout=TIMEOUT_MS)
    assert "48" in window.error_box.text() and "32" in window.error_box.text()
    window.error_box.close()
    open_demo(qtbot, window)
    window.documents.select_row(0)
    qtbot.waitUntil(lambda: "does not fit" in window.features.bars.stack.message, timeout=TIMEOUT_MS)


def test_missing_dictionary_reports_in_a_box(qtbot, make_window, tiny_teacher, tmp_path):
    window = make_window(teacher=tiny_teacher, dictionary=None)
    assert "No dictionary is loaded" in window.features.bars.stack.message
    window.features.open_dictionary(tmp_path / "nothing-here")
    qtbot.waitUntil(lambda: window.error_box is not None and window.error_box.isVisible(), timeout=TIMEOUT_MS)
    assert "does not exist" in window.error_box.text()
    window.error_box.close()


def test_gemma_scope_params_asks_for_the_hook(qtbot, make_window, tiny_teacher, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    folder = tmp_path / "layer_2" / "width_64"
    folder.mkdir(parents=True)
    save_file({"W_enc": torch.randn(32, 64) * 0.1, "W_dec": torch.randn(64, 32) * 0.1, "b_enc": torch.zeros(64),
               "b_dec": torch.zeros(32), "threshold": torch.full((64,), 0.05)}, str(folder / "params.safetensors"))
    window = make_window(teacher=tiny_teacher, dictionary=None)
    window.features.open_path(folder)
    dialog = window.features._hook_dialog
    assert dialog.textValue() == "resid_post.2"  # guessed from the path
    dialog.accept()
    d = loaded(qtbot, window)
    assert d.hook.name == "resid_post.2" and d.sae.cfg.architecture == "jumprelu"
    assert "JumpReLU" in window.features.bars.dictionary_label.text()


def test_remembered_dictionary_opens_at_start(qtbot, make_window, tiny_teacher, sae_dir):
    window = make_window(teacher=tiny_teacher, dictionary=None)
    window.features.open_dictionary(sae_dir)
    loaded(qtbot, window)
    again = make_window(teacher=tiny_teacher)  # the default: the dictionary used last
    assert Path(loaded(qtbot, again).source) == sae_dir


def test_cancelled_index_is_not_rebuilt_until_asked(qtbot, make_window, tiny_teacher, sae_dir):
    window = make_window(teacher=tiny_teacher, dictionary=str(sae_dir))
    loaded(qtbot, window)
    # Slow the main twin's blocks (the runner's) so the index build is long enough to cancel.
    handles = [b.register_forward_pre_hook(lambda m, a: time.sleep(0.01)) for b in tiny_teacher.layers]
    try:
        open_demo(qtbot, window)
        qtbot.waitUntil(lambda: window.features.index_building()
                        and window.runner.running() is window.features._index_task, timeout=TIMEOUT_MS)
        window.cancel_task()
        qtbot.waitUntil(lambda: not window.features.index_building(), timeout=TIMEOUT_MS)
        assert window.features.index() is None
        window.features.refresh()
        assert not window.features.index_building()
    finally:
        for h in handles:
            h.remove()
    window.act_build_index.trigger()
    wait_index(qtbot, window)


def test_walking_the_list_shows_the_last_document_only(qtbot, ready, probe):
    """Results of documents left behind are dropped: the bars end on the selected one."""
    window, sae = ready
    for row in (20, 21, 22, 23):
        window.documents.select_row(row)
    doc = window.entries[23].doc
    qtbot.waitUntil(lambda: window.features.bars.header.text() == f"Features of {doc.id}", timeout=TIMEOUT_MS)
    qtbot.waitUntil(window.is_idle, timeout=TIMEOUT_MS)
    _, expected = document_scores(probe, sae, doc.text, corpus_reference(window), "projection")
    assert window.features.bars.header.text() == f"Features of {doc.id}"
    assert shown(window) == expected.top(window.features.bars.n_rows)


def test_pasted_text_gets_bars_and_can_be_compared(qtbot, ready):
    window, _ = ready
    assert window.paste_text("The committee postponed the vote because the chair was ill.", "note")
    qtbot.waitUntil(lambda: window.features.bars.header.text() == "Features of pasted-1", timeout=TIMEOUT_MS)
    bars = window.features.bars
    assert bars.documents[-1][0] == "pasted-1"
    bars.set_compare("document", "5")
    qtbot.waitUntil(lambda: bars.header.text() == f"Features of pasted-1 vs {window.entries[5].doc.id}",
                    timeout=TIMEOUT_MS)


def test_projection_uses_the_dictionarys_reference_without_a_corpus(qtbot, probe, make_window, tiny_teacher, sae_dir):
    from core.features import save_reference

    torch.manual_seed(1)
    ref = Reference(torch.randn(32), torch.rand(32) + 0.5, "shipped reference", f"resid_post.{LAYER}", 10)
    save_reference(sae_dir, ref)
    window = make_window(teacher=tiny_teacher, dictionary=str(sae_dir))
    d = loaded(qtbot, window)
    text = "A dictionary folder can ship the reference its labels were made with."
    window.paste_text(text)
    bars = window.features.bars
    qtbot.waitUntil(lambda: bool(bars.rows) and "dictionary's reference" in bars.note.text(), timeout=TIMEOUT_MS)
    assert "shipped reference" in bars.note.text()
    _, expected = document_scores(probe, d.sae, text, ref, "projection")
    assert shown(window) == expected.top(bars.n_rows)
