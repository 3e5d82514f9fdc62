"""GUI tests: real widgets driven with pytest-qt (offscreen) on a tiny random teacher.

They assert on the data shown (tokens, neighbours, problems), on cancellation and on the event
loop staying responsive, and fail on worker threads left running after the window closes.
"""

import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402
from PySide6.QtWidgets import QDialogButtonBox  # noqa: E402

from core.documents import load_demo  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from gui.stall_probe import StallProbe  # noqa: E402
from gui.token_view import display_text  # noqa: E402

TIMEOUT_MS = 60_000


@pytest.fixture
def window(make_window, tiny_teacher):
    return make_window(teacher=tiny_teacher)


def open_demo_and_wait(qtbot, window):
    with qtbot.waitSignal(window.corpus_changed, timeout=TIMEOUT_MS):
        window.open_demo()
    qtbot.waitUntil(lambda: window.layer in window._vectors, timeout=TIMEOUT_MS)


def select(qtbot, window, row):
    window.documents.select_row(row)
    qtbot.waitUntil(lambda: bool(window.token_panel.tokens) and window.current_entry() is window.entries[row]
                    and window.token_panel.header.text().startswith(window.entries[row].doc.id),
                    timeout=TIMEOUT_MS)


def token_fragments(browser):
    """(text, tooltip) of every text fragment of the token view's document."""
    out, block = [], browser.document().begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            fragment = it.fragment()
            out.append((fragment.text(), fragment.charFormat().toolTip()))
            it += 1
        block = block.next()
    return [f for f in out if f[1]]


def neighbour_cosines(window):
    model = window.neighbours.model
    return [model.index(r, 1).data(Qt.ItemDataRole.UserRole) for r in range(model.rowCount())]


def test_layer_is_clamped_to_the_model(window, tiny_teacher):
    assert window.layer == tiny_teacher.n_layers - 1
    assert window.layer_spin.maximum() == tiny_teacher.n_layers - 1
    assert "tiny-gemma3" in window.windowTitle()


def test_inspect_document_shows_tokens_and_neighbours(qtbot, window, tiny_teacher):
    open_demo_and_wait(qtbot, window)
    assert len(window.entries) == len(load_demo().documents)
    select(qtbot, window, 5)
    doc = window.entries[5].doc
    ids = tiny_teacher.tokenize([doc.text], 1024)[0]
    panel = window.token_panel
    assert len(panel.tokens) == len(ids) == len(panel.values)
    assert panel.is_bos[0] and not any(panel.is_bos[1:])
    # One coloured fragment per token, each with a tooltip naming the token and its value.
    fragments = token_fragments(panel.browser)
    assert fragments[0][1].startswith("BOS")
    tokens = [f for f in fragments[1:] if f[1].startswith("token ")]
    assert len(tokens) == len(ids) - 1
    for i, (text, tip) in enumerate(tokens, start=1):
        assert tip.startswith(f"token {i}: {panel.tokens[i]!r} · residual norm {panel.values[i]:.2f}")
        assert text == display_text(panel.tokens[i]).replace("<br>", "\u2028").replace("&amp;", "&") \
            or "&" in text or "<" in text or ">" in text
    qtbot.waitUntil(lambda: window.neighbours.model.rowCount() == 10, timeout=TIMEOUT_MS)
    cosines = neighbour_cosines(window)
    assert all(-1.0 - 1e-5 <= c <= 1.0 + 1e-5 for c in cosines)
    assert cosines == sorted(cosines, reverse=True)
    assert doc.id not in [r.doc_id for r in window.neighbours.model.rows]

    # Double-clicking a neighbour opens that document.
    target = window.neighbours.model.rows[2]
    table = window.neighbours.table
    rect = table.visualRect(window.neighbours.model.index(2, 3))
    # QTest's double click alone does not set the view's pressed index; a click first does.
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: window.current_entry().doc.id == target.doc_id, timeout=5_000)


def test_cancel_extraction_then_resume(qtbot, window, tiny_teacher):
    # Slow every block down so the extraction is long enough to cancel mid-way.
    handles = [b.register_forward_pre_hook(lambda m, a: time.sleep(0.02)) for b in tiny_teacher.layers]
    try:
        with qtbot.waitSignal(window.corpus_changed, timeout=TIMEOUT_MS):
            window.open_demo()
        progressed = []
        window.runner.progress.connect(lambda task, d, t, m: progressed.append(d))
        qtbot.waitUntil(lambda: any(d > 0 for d in progressed), timeout=TIMEOUT_MS)
        task = window._extract_task
        assert task.outcome is None and window.status.cancel_button.isVisible()
        t0 = time.monotonic()
        qtbot.mouseClick(window.status.cancel_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: task.outcome == "cancelled", timeout=2_000)
        latency = time.monotonic() - t0
        qtbot.waitUntil(window.is_idle, timeout=2_000)
        print(f"\ncancel took effect after {latency * 1000:.0f} ms")
        assert not window.status.progress.isVisible() and not window.status.cancel_button.isVisible()
        assert window.layer not in window._vectors
        assert "F5" in window.neighbours.stack.message
    finally:
        for h in handles:
            h.remove()
    window.recompute()  # F5: the same extraction again, resuming the cache folder
    qtbot.waitUntil(lambda: window.layer in window._vectors, timeout=TIMEOUT_MS)
    assert window._extract_task.outcome == "finished"
    assert len(window._vectors[window.layer].ids) == len(window.corpus.documents)
    qtbot.waitUntil(lambda: window.neighbours.model.rowCount() == 10, timeout=TIMEOUT_MS)


def test_escape_key_cancels(qtbot, window, tiny_teacher):
    handles = [b.register_forward_pre_hook(lambda m, a: time.sleep(0.02)) for b in tiny_teacher.layers]
    try:
        window.open_demo()
        qtbot.waitUntil(lambda: window._extract_task is not None and window.runner.running() is not None,
                        timeout=TIMEOUT_MS)
        task = window._extract_task
        window.activateWindow()
        qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=2_000)
        qtbot.keyClick(window.documents.table, Qt.Key.Key_Escape)
        qtbot.waitUntil(lambda: task.outcome == "cancelled", timeout=2_000)
    finally:
        for h in handles:
            h.remove()


def test_folder_with_binary_file_reports_problem(qtbot, window, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.txt").write_text("A perfectly good document about cats.", encoding="utf-8")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 8)
    with qtbot.waitSignal(window.corpus_changed, timeout=TIMEOUT_MS):
        window.open_paths([folder])
    assert [e.doc.id for e in window.entries] == ["good.txt"]
    assert window.problems.isVisible()
    assert window.problems.table.rowCount() == 1
    assert "binary.txt" in window.problems.table.item(0, 0).text()
    assert "binary" in window.problems.table.item(0, 2).text()
    assert window.status.problems_button.isVisible() and "1 problem" in window.status.problems_button.text()
    assert str(folder) in window.recent.items()


def test_missing_path_shows_message_not_traceback(qtbot, window, tmp_path):
    window.open_paths([tmp_path / "nope.txt"])
    qtbot.waitUntil(lambda: window.error_box is not None and window.error_box.isVisible(), timeout=5_000)
    assert "does not exist" in window.error_box.text() or "Not found" in window.error_box.text()
    assert "Traceback" not in window.error_box.text() + window.error_box.informativeText()
    window.error_box.close()


def test_paste_dialog_adds_document_compared_with_corpus(qtbot, window):
    open_demo_and_wait(qtbot, window)
    dialog = window.paste_dialog_open()
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()
    dialog.text.setPlainText("Computers are fast, but programmers are slow.\nSo it goes.")
    dialog.label.setText("mine")
    assert ok.isEnabled()
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
    entry = window.entries[-1]
    assert entry.corpus_index is None and entry.doc.label == "mine"
    qtbot.waitUntil(lambda: window.current_entry() is entry and bool(window.token_panel.tokens), timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: window.neighbours.model.rowCount() == 10, timeout=TIMEOUT_MS)
    cosines = neighbour_cosines(window)
    assert cosines == sorted(cosines, reverse=True)
    assert window.corpus.documents[-1].id != entry.doc.id  # not added to the corpus


def test_layer_change_recomputes_and_caches(qtbot, window):
    open_demo_and_wait(qtbot, window)
    select(qtbot, window, 3)
    top = window.layer
    values_top = list(window.token_panel.values)
    with qtbot.waitSignal(window.vectors_ready, timeout=TIMEOUT_MS, check_params_cb=lambda l: l == 1):
        window.layer_spin.setValue(1)  # debounced, then recomputed
    qtbot.waitUntil(lambda: "block 1" in window.token_panel.header.text(), timeout=TIMEOUT_MS)
    assert window.token_panel.values != values_top
    qtbot.waitUntil(lambda: window.neighbours.model.rowCount() == 10, timeout=TIMEOUT_MS)
    # Back to the first layer: both results come from memory, no task is started.
    window.set_layer(top)
    assert window.token_panel.values == values_top
    assert window.neighbours.model.rowCount() == 10
    assert window.is_idle()


def test_drop_files_adds_them(qtbot, window, tmp_path):
    open_demo_and_wait(qtbot, window)
    n = len(window.corpus.documents)
    files = [tmp_path / "a.txt", tmp_path / "b.md"]
    files[0].write_text("first dropped document", encoding="utf-8")
    files[1].write_text("# second\n\ndropped document", encoding="utf-8")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(f)) for f in files])
    event = QDropEvent(QPointF(100, 100), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.corpus_changed, timeout=TIMEOUT_MS):
        window.dropEvent(event)
    assert event.isAccepted()
    assert len(window.corpus.documents) == n + 2
    assert window.current_entry().doc.id == "a.txt"
    assert "+" in window.corpus.name


def test_exports(qtbot, window, tmp_path):
    open_demo_and_wait(qtbot, window)
    select(qtbot, window, 0)
    qtbot.waitUntil(lambda: window.neighbours.model.rowCount() == 10, timeout=TIMEOUT_MS)
    png = window.export_token_png(str(tmp_path / "tokens.png"))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_path = window.export_neighbours_csv(str(tmp_path / "n.csv"))
    lines = Path(csv_path).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "rank,cosine,label,id,text" and len(lines) >= 11


def test_keyboard_shortcuts(qtbot, window):
    open_demo_and_wait(qtbot, window)
    window.activateWindow()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=2_000)
    qtbot.keyClick(window.documents.table, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert window.documents.filter.hasFocus()
    qtbot.keyClicks(window.documents.filter, "science")
    assert 0 < window.documents.proxy.rowCount() < len(window.entries)
    window.documents.table.setFocus()
    window.documents.table.selectRow(0)
    first = window.current_entry()
    qtbot.keyClick(window.documents.table, Qt.Key.Key_Down)
    now = window.current_entry()
    assert now is not first and "science" in f"{now.doc.id} {now.doc.label} {now.doc.text}".lower()


def test_recent_list_is_kept_and_cleared(qtbot, window, tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("hello there", encoding="utf-8")
    with qtbot.waitSignal(window.corpus_changed, timeout=TIMEOUT_MS):
        window.open_paths([f])
    assert window.recent.items()[0] == str(f)
    window._fill_recent_menu()
    assert any(a.text() == str(f) for a in window.recent_menu.actions())
    window.recent.clear()
    assert window.recent.items() == []


def test_stalls_while_teacher_loads_and_corpus_extracts(qtbot, make_window, tiny_model_dir):
    window = make_window()
    assert "no teacher" in window.windowTitle()
    with StallProbe() as load_probe:
        with qtbot.waitSignal(window.teacher_changed, timeout=TIMEOUT_MS):
            window.load_teacher(tiny_model_dir)
    load = load_probe.stats()
    with StallProbe() as extract_probe:
        window.open_demo()
        qtbot.waitUntil(lambda: window.layer in window._vectors, timeout=TIMEOUT_MS)
    extract = extract_probe.stats()
    print(f"\ntiny teacher load: {load}\ntiny demo extraction: {extract}")
    assert load.ticks >= 1 and extract.ticks > 10  # the tiny model loads in tens of ms
    assert load.max_ms < 1000 and extract.max_ms < 1000


def test_bad_model_path_is_reported(qtbot, make_window, tmp_path):
    window = make_window()
    window.load_teacher(tmp_path / "missing-model")
    qtbot.waitUntil(lambda: window.error_box is not None and window.error_box.isVisible(), timeout=TIMEOUT_MS)
    assert "does not exist" in window.error_box.text()
    window.error_box.close()
    assert window.teacher is None


def test_main_runs_and_quits(qtbot, tmp_path):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from gui import app as gui_app

    doc = tmp_path / "d.txt"
    doc.write_text("some text to open", encoding="utf-8")
    seen = {}

    def close_all():
        seen["windows"] = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
        QApplication.closeAllWindows()

    QTimer.singleShot(1500, close_all)
    assert gui_app.main(["--no-model", "--corpus", str(doc), "--layer", "2"]) == 0
    (w,) = [w for w in seen["windows"] if w.corpus.documents]
    assert w.layer == 2 and [d.id for d in w.corpus.documents] == ["d.txt"]
    assert w.runner.is_finished() and w.inspector.is_finished() and w.io.is_finished()


def test_bundled_name_matches_core():
    from core.models import BUNDLED

    from gui.app import BUNDLED as GUI_BUNDLED, parse_args

    assert GUI_BUNDLED == BUNDLED == parse_args([]).model


def test_task_runner_rules(qtbot):
    """Same key supersedes; errors become (what, hint); progress arrives on the GUI thread."""
    from PySide6.QtCore import QThread

    from core.errors import DistillscopeError
    from gui.worker import Task, TaskRunner

    runner = TaskRunner(torch_threads=0)
    gui_thread = QThread.currentThread()
    seen = []
    runner.progress.connect(lambda task, d, t, m: seen.append(QThread.currentThread() == gui_thread))

    def slow(state):
        for i in range(500):
            state.report(i, 500, "working")
            state.check_cancelled()
            time.sleep(0.01)
        return "slow done"

    try:
        first = runner.submit(Task("job", slow))
        qtbot.waitUntil(lambda: bool(seen), timeout=5_000)
        with qtbot.waitSignal(runner.finished, timeout=5_000) as done:
            second = runner.submit(Task("job", lambda state: "second"))
        assert first.outcome == "cancelled" and second.outcome == "finished"
        assert done.args[1] == "second" and all(seen)

        def bad(state):
            raise DistillscopeError("The file is bad.", "Use another file.")

        with qtbot.waitSignal(runner.failed, timeout=5_000) as failed:
            runner.submit(Task("other", bad))
        assert failed.args[1:] == ["The file is bad.", "Use another file."]
        with qtbot.waitSignal(runner.failed, timeout=5_000) as failed:
            runner.submit(Task("other", lambda state: {}["missing"]))
        assert failed.args[1].startswith("Unexpected error: KeyError")
        qtbot.waitUntil(lambda: not runner.is_busy(), timeout=5_000)
    finally:
        assert runner.shutdown()
    assert runner.is_finished()


def test_cycles_are_collected_on_the_gui_thread_only(qapp):
    """A worker thread that triggered the cycle collector could free a widget there and deadlock
    with the GUI thread (seen in CI): the app turns automatic collection off and collects on a
    GUI-thread timer."""
    import gc

    from gui.app import make_app

    app = make_app()
    assert not gc.isenabled()
    assert app.gc_on_gui_thread.timer.isActive()
    assert app.gc_on_gui_thread.timer.thread() is app.thread()
