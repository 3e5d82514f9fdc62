"""The newcomer's path through the app: Train > New Training Run, the wizard's pages, Launch,
then the run in the Training tab with live curves, paused, resumed and cancelled."""

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QWizard  # noqa: E402

from gui.main_window import MainWindow  # noqa: E402
from tests.test_jobs import tiny_spec, write_corpus  # noqa: E402

TIMEOUT_MS = 60_000


def test_wizard_launches_a_run_that_is_watched_paused_resumed_and_cancelled(qtbot, tiny_model_dir,
                                                                            tiny_teacher, tmp_path):
    window = MainWindow(teacher=tiny_teacher)
    qtbot.addWidget(window)
    window.show()
    try:
        spec = tiny_spec(tiny_model_dir, write_corpus(tmp_path / "docs.jsonl"), steps=100_000)
        wizard = window.new_training_run(spec)  # as a cloned run would prefill it
        for _ in range(3):
            wizard.next()
        qtbot.waitUntil(lambda: wizard.cost_page.estimate is not None, timeout=TIMEOUT_MS)
        qtbot.mouseClick(wizard.button(QWizard.WizardButton.FinishButton), Qt.MouseButton.LeftButton)
        view = window.training_view
        assert view is not None and window.tabs.currentIndex() == 1
        qtbot.waitUntil(lambda: window.run_bridge.active_run_id() is not None, timeout=TIMEOUT_MS)
        run_id = window.run_bridge.active_run_id()
        qtbot.waitUntil(lambda: view.curves.point_count(run_id, "loss") >= 3, timeout=TIMEOUT_MS)

        qtbot.mouseClick(view.buttons["pause"], Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: view.row(run_id).state == "paused", timeout=3_000)
        qtbot.mouseClick(view.buttons["resume"], Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: view.row(run_id).state == "running", timeout=3_000)
        qtbot.mouseClick(view.buttons["cancel"], Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: view.row(run_id).state == "cancelled", timeout=3_000)
        assert window.run_bridge.runner.active is None or view.row(run_id).state == "cancelled"
    finally:
        window.shutdown()
    assert window.runner.is_finished() and window.inspector.is_finished()
