"""Watch runs learn: the runs list on the left, live curves of the selected runs on the right.

    view = TrainingView(bridge)          # bridge: gui.run_bridge.RunBridge
    view.clone_requested.connect(...)    # a core Run whose spec should open in the wizard

While the view is visible, the list refreshes every second and at once on the bridge's state
events (cheap: a stat per run, status.json only when it changed), and the curves tail the shown
runs' metrics.jsonl four times a second from where they stopped (gui/curves.py). Selecting several runs
(Ctrl/Shift+click) overlays them, one colour per run, the same colour as its swatch in the list.
The run buttons act on the current row (the one last clicked).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QHBoxLayout,
                               QHeaderView, QLabel, QMenu, QMessageBox, QPushButton, QSlider,
                               QSplitter, QStackedWidget, QStyle, QTableView, QToolButton,
                               QVBoxLayout, QWidget)

from core.jobs import Run
from gui.dialogs import show_error_box
from gui.curves import DEFAULT_METRICS, KIND_METRICS, METRICS, X_MODES, CurvesPanel, MetricPlot
from gui.run_bridge import RunBridge
from gui.runs_list import RESUMABLE, ProgressDelegate, RunReader, RunRow, RunsModel, details_html

LIST_INTERVAL_MS = 1000
CURVES_INTERVAL_MS = 250
EMPTY_MESSAGE = "No runs yet.\n\nTrain → New training run… (Ctrl+T)"
NO_SELECTION = "Select a run on the left to see its curves.\nCtrl+click or Shift+click several to compare them."


class TrainingView(QWidget):
    clone_requested = Signal(object)  # a core Run: open its spec in the wizard
    student_requested = Signal(str)  # a finished student run's artifacts/student folder
    new_run_requested = Signal()  # the empty state's button
    runs_refreshed = Signal()  # the list was re-read (tests wait on it)

    def __init__(self, bridge: RunBridge, parent=None, *, root: Optional[Path] = None):
        super().__init__(parent)
        self.bridge = bridge
        self.reader = RunReader(root)
        self.confirm_box: Optional[QMessageBox] = None
        self.error_box: Optional[QMessageBox] = None
        self._auto_selected = True  # the selection is ours (follow new runs), not the user's
        self._selecting = False  # a selection change made by the code, not the user
        self._progress: dict[str, str] = {}  # run id -> latest progress message from the bridge

        self.curves = CurvesPanel(DEFAULT_METRICS)
        self._metrics_kind = "sae"
        self.curves.menu_hook = self._add_plot_menu
        self.model = RunsModel(self.curves.colour)
        self._build()
        self._build_actions()

        self._list_timer = QTimer(self, interval=LIST_INTERVAL_MS)
        self._list_timer.timeout.connect(lambda: self.isVisible() and self.refresh_runs())
        self._curves_timer = QTimer(self, interval=CURVES_INTERVAL_MS)
        self._curves_timer.timeout.connect(self._poll_curves)
        self._soon = QTimer(self, singleShot=True, interval=50)  # coalesces bursts of state events
        self._soon.timeout.connect(lambda: self.isVisible() and self.refresh_runs())
        bridge.event.connect(self._on_event)
        self.refresh_runs()
        self._list_timer.start()
        self._curves_timer.start()

    # ================================================================== construction

    def _build(self) -> None:
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setItemDelegateForColumn(2, ProgressDelegate(self.table))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col, width in ((1, 96), (2, 92), (3, 50), (4, 46)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            self.table.setColumnWidth(col, width)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._update_actions())

        self.table.setStyleSheet("QTableView { selection-background-color: #d4e4f4; selection-color: #000000; }")
        self.run_caption = QLabel()
        self.run_caption.setWordWrap(True)
        self.run_caption.setTextFormat(Qt.TextFormat.RichText)
        self.run_caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.run_caption.setStyleSheet("color: #404040; padding: 4px 2px;")
        self.run_caption.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.buttons_top = QHBoxLayout()
        self.buttons_bottom = QHBoxLayout()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Runs")
        title.setStyleSheet("font-weight: 600; font-size: 11pt;")
        left_layout.addWidget(title)
        left_layout.addWidget(self.table, 1)
        left_layout.addWidget(self.run_caption)
        left_layout.addLayout(self.buttons_top)
        left_layout.addLayout(self.buttons_bottom)

        # Curve controls.
        self.smoothing = QSlider(Qt.Orientation.Horizontal)
        self.smoothing.setRange(0, 99)
        self.smoothing.setValue(round(self.curves.weight * 100))
        self.smoothing.setFixedWidth(140)
        self.smoothing.setToolTip("Exponential moving average of the curves (as TensorBoard's "
                                  "smoothing, debiased at the start). The raw values stay faint beneath.")
        self.smoothing_label = QLabel()
        self.smoothing_label.setMinimumWidth(30)
        self.smoothing.valueChanged.connect(self._smoothing_changed)
        self._smoothing_changed(self.smoothing.value())
        self.log_y = QCheckBox("Log y")
        self.log_y.setToolTip("Logarithmic y axes (values at or below zero are left out)")
        self.log_y.toggled.connect(self.curves.set_log_y)
        self.x_axis = QComboBox()
        for mode, label in (("step", "Step"), ("time", "Training time"), ("wall", "Wall clock")):
            self.x_axis.addItem(label, mode)
        self.x_axis.setToolTip("x axis: training step, training time (pauses left out) or the "
                               "wall-clock time of each logged step")
        self.x_axis.currentIndexChanged.connect(lambda _i: self.curves.set_x_mode(self.x_axis.currentData()))
        self.metrics_button = QToolButton()
        self.metrics_button.setText("Metrics")
        self.metrics_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.metrics_menu = QMenu(self.metrics_button)
        self.metric_actions: dict[str, QAction] = {}
        for metric, title in METRICS.items():
            action = self.metrics_menu.addAction(title)
            action.setCheckable(True)
            action.setChecked(metric in DEFAULT_METRICS)
            action.toggled.connect(lambda _on: self._metrics_changed())
            self.metric_actions[metric] = action
        self.metrics_button.setMenu(self.metrics_menu)
        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.export_menu = QMenu(self.export_button)
        self.export_menu.aboutToShow.connect(self._fill_export_menu)
        self.export_button.setMenu(self.export_menu)

        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(QLabel("Smoothing"))
        controls.addWidget(self.smoothing)
        controls.addWidget(self.smoothing_label)
        controls.addSpacing(12)
        controls.addWidget(self.log_y)
        controls.addSpacing(12)
        controls.addWidget(QLabel("x:"))
        controls.addWidget(self.x_axis)
        controls.addStretch(1)
        controls.addWidget(self.metrics_button)
        controls.addWidget(self.export_button)

        self.curves_title = QLabel()
        self.curves_title.setStyleSheet("font-weight: 600; font-size: 11pt;")
        self.curves_title.setTextFormat(Qt.TextFormat.PlainText)
        self.curves_stack = QStackedWidget()
        self.no_selection = QLabel(NO_SELECTION)
        self.no_selection.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.no_selection.setStyleSheet("color: #808080; font-size: 11pt; padding: 24px;")
        self.curves_stack.addWidget(self.no_selection)
        self.curves_stack.addWidget(self.curves)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.curves_title)
        right_layout.addLayout(controls)
        right_layout.addWidget(self.curves_stack, 1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([430, 850])
        self.splitter.setChildrenCollapsible(False)

        # The empty state: a message and a button for the wizard.
        empty = QWidget()
        empty_layout = QVBoxLayout(empty)
        empty_layout.addStretch(1)
        self.empty_label = QLabel(EMPTY_MESSAGE)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setStyleSheet("color: #808080; font-size: 12pt;")
        empty_layout.addWidget(self.empty_label)
        new_button = QPushButton("New training run…")
        new_button.clicked.connect(self.new_run_requested)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(new_button)
        row.addStretch(1)
        empty_layout.addLayout(row)
        empty_layout.addStretch(2)
        self.stack = QStackedWidget()
        self.stack.addWidget(empty)
        self.stack.addWidget(self.splitter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 4)
        layout.addWidget(self.stack)

    def _build_actions(self) -> None:
        SP = QStyle.StandardPixmap

        def action(text, slot, icon, tip, shortcut=None) -> QAction:
            a = QAction(self.style().standardIcon(icon), text, self)
            a.setToolTip(tip)
            a.setStatusTip(tip)
            a.triggered.connect(lambda _checked=False: slot())
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
                a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(a)
            return a

        self.act_pause = action("Pause", self.pause, SP.SP_MediaPause, "Pause the running job (it keeps its place)")
        self.act_resume = action("Resume", self.resume, SP.SP_MediaPlay, "Continue the paused job")
        self.act_cancel = action("Cancel", self.cancel, SP.SP_MediaStop,
                                 "Stop the job; it writes a checkpoint, so it can be resumed later")
        self.act_continue = action("Resume from checkpoint", self.resume_from_checkpoint, SP.SP_BrowserReload,
                                   "Continue this stopped run from its latest checkpoint")
        self.act_clone = action("Clone…", self.clone, SP.SP_FileDialogNewFolder,
                                "Open this run's settings in the training wizard, to start a new run from them")
        self.act_student = action("Open student", self.open_student, SP.SP_ArrowForward,
                                  "Open this run's student: its agreement with the teacher, its feature "
                                  "bars beside the teacher's, contrasts on its vectors")
        self.act_open = action("Open folder", self.open_folder, SP.SP_DirOpenIcon,
                               "Show the run folder (spec, metrics, checkpoints, artifacts)")
        self.act_delete = action("Delete…", self.delete_current, SP.SP_TrashIcon,
                                 "Delete the run folder with its checkpoints", "Del")

        def button(a: QAction) -> QToolButton:
            b = QToolButton()
            b.setDefaultAction(a)
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            return b

        self.buttons: dict[str, QToolButton] = {}
        for name, a in (("pause", self.act_pause), ("resume", self.act_resume), ("cancel", self.act_cancel),
                        ("continue", self.act_continue)):
            self.buttons[name] = button(a)
            self.buttons_top.addWidget(self.buttons[name])
        self.buttons_top.addStretch(1)
        for name, a in (("student", self.act_student), ("clone", self.act_clone), ("open", self.act_open),
                        ("delete", self.act_delete)):
            self.buttons[name] = button(a)
            self.buttons_bottom.addWidget(self.buttons[name])
        self.buttons_bottom.addStretch(1)
        self._update_actions()

    # ================================================================== runs list

    def refresh_runs(self) -> None:
        """Re-read the run folders (cheap) and update the list, keeping the selection."""
        rows = self.reader.read()
        selected = self.selected_ids()
        current = self.current_row()
        reset = self.model.update_rows(rows)
        if reset:
            self._restore_selection(selected, current.id if current else None)
        self.stack.setCurrentIndex(1 if rows else 0)
        self._follow_active()
        self._update_actions()
        self._update_titles()
        self.runs_refreshed.emit()

    def _restore_selection(self, ids: list[str], current: Optional[str]) -> None:
        sel = self.table.selectionModel()
        self._selecting = True
        selection = QItemSelection()
        for run_id in ids:
            row = self.model.row_of(run_id)
            if row >= 0:
                selection.select(self.model.index(row, 0), self.model.index(row, len(self.model.COLUMNS) - 1))
        sel.select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        row = self.model.row_of(current) if current else -1
        if row >= 0:
            sel.setCurrentIndex(self.model.index(row, 0), QItemSelectionModel.SelectionFlag.NoUpdate)
        self._selecting = False
        self._selection_changed()

    def _follow_active(self) -> None:
        """While the user has not picked runs, show the active run (or else the newest)."""
        if not self.model.rows or (not self._auto_selected and self.selected_ids()):
            return
        target = self.bridge.active_run_id() or (self.bridge.queued_ids() or [None])[0]
        if target is None or self.model.row_of(target) < 0:
            if self.selected_ids():
                return
            target = self.model.rows[0].id
        if self.selected_ids() != [target]:
            self.select_runs([target], auto=True)

    def select_runs(self, run_ids: list[str], auto: bool = False) -> None:
        """Select (and so overlay) these runs; the first becomes the current row."""
        self._restore_selection(run_ids, run_ids[0] if run_ids else None)
        self._auto_selected = auto

    def selected_ids(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.model.rows[r].id for r in rows if r < len(self.model.rows)]

    def current_row(self) -> Optional[RunRow]:
        index = self.table.currentIndex()
        if index.isValid() and index.row() < len(self.model.rows):
            return self.model.rows[index.row()]
        ids = self.selected_ids()
        return self.row(ids[0]) if ids else None

    def row(self, run_id: str) -> Optional[RunRow]:
        i = self.model.row_of(run_id)
        return self.model.rows[i] if i >= 0 else None

    def _selection_changed(self, *_args) -> None:
        if self._selecting:
            return
        if _args:  # from the selection model: the user picked runs
            self._auto_selected = False
        rows = [self.row(i) for i in self.selected_ids()]
        rows = [r for r in rows if r is not None]
        self._metrics_for_kind(rows)
        self.curves.set_runs([r.run for r in rows], {r.id: r.name for r in rows})
        self.curves_stack.setCurrentIndex(1 if rows else 0)
        if self.model.rows:  # the colour swatches in the first column
            self.model.dataChanged.emit(self.model.index(0, 0), self.model.index(len(self.model.rows) - 1, 0))
        self._update_actions()
        self._update_titles()

    def _metrics_for_kind(self, rows) -> None:
        """Show the metrics the current run's kind of job logs (an SAE's or a student's)."""
        kinds = set()
        for r in rows[:1]:
            try:
                kinds.add(r.run.spec.kind)
            except Exception:  # an unreadable spec: keep the plots as they are
                return
        kind = next(iter(kinds), None)
        if kind in KIND_METRICS and kind != self._metrics_kind:
            self._metrics_kind = kind
            self.set_metrics(list(KIND_METRICS[kind]))

    def _update_titles(self) -> None:
        ids = self.selected_ids()
        if not ids:
            self.curves_title.setText("Curves")
        elif len(ids) == 1:
            row = self.row(ids[0])
            self.curves_title.setText(f"{row.name}  ·  {row.state}" if row else "Curves")
        else:
            self.curves_title.setText(f"Comparing {len(ids)} runs")
        row = self.current_row()
        if row is None:
            self.run_caption.setText("")
            return
        self.run_caption.setText(run_details_html(row, self._progress.get(row.id, "")))

    # ================================================================== bridge events, timers

    def _on_event(self, kind: str, run_id: str, payload: dict) -> None:
        # Progress and metrics arrive at every step: only remember the message; the timers read
        # the files. State changes refresh the list at once (coalesced).
        if kind == "progress":
            self._progress[run_id] = str(payload.get("message", ""))
        elif kind in ("state", "idle"):
            if not self._soon.isActive():
                self._soon.start()

    def _poll_curves(self) -> None:
        if self.isVisible() and self.curves_stack.currentIndex() == 1:
            self.curves.poll()
        row = self.current_row()
        if row is not None and row.state == "running" and self.isVisible():
            self._update_titles()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh_runs()
        self.curves.poll()

    def shutdown(self) -> None:
        """Stop the timers (the bridge and its runner belong to the caller). Runs once: the main
        window's quit and the view's own closeEvent both call it."""
        if getattr(self, "_shut_down", False):
            return
        self._shut_down = True
        for timer in (self._list_timer, self._curves_timer, self._soon):
            timer.stop()
        self.curves.stop()
        try:
            self.bridge.event.disconnect(self._on_event)
        except (RuntimeError, TypeError):
            pass

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    # ================================================================== actions

    def _is_active(self, row: Optional[RunRow]) -> bool:
        return row is not None and row.id == self.bridge.active_run_id()

    def _update_actions(self) -> None:
        row = self.current_row()
        active = self._is_active(row)
        paused = active and self.bridge.is_paused()
        queued = row is not None and row.id in self.bridge.queued_ids()
        self.act_pause.setEnabled(active and not paused)
        self.act_resume.setEnabled(paused)
        self.act_cancel.setEnabled(active or queued)
        self.act_continue.setEnabled(self._can_continue(row))
        self.act_clone.setEnabled(row is not None and row.spec_ok)
        self.act_open.setEnabled(row is not None)
        self.act_student.setEnabled(self._student_folder(row) is not None)
        self.act_delete.setEnabled(row is not None and self._delete_refusal(row) is None)

    def _can_continue(self, row: Optional[RunRow]) -> bool:
        return (row is not None and row.state in RESUMABLE and row.checkpoint and row.spec_ok
                and not self._is_active(row) and row.id not in self.bridge.queued_ids())

    def _delete_refusal(self, row: RunRow) -> Optional[str]:
        if self._is_active(row) or row.id in self.bridge.queued_ids():
            return "This run is running or waiting to run. Cancel it first."
        if row.live:
            return "This run is running in another process (for example from the command line)."
        return None

    def pause(self) -> None:
        if self._is_active(self.current_row()):
            self.bridge.pause()
        self._after_action()

    def resume(self) -> None:
        if self._is_active(self.current_row()):
            self.bridge.resume()
        self._after_action()

    def cancel(self) -> None:
        row = self.current_row()
        if row is not None and (self._is_active(row) or row.id in self.bridge.queued_ids()):
            self.bridge.cancel(row.id)
        self._after_action()

    def resume_from_checkpoint(self) -> None:
        row = self.current_row()
        if self._can_continue(row):
            self.bridge.resume_run(row.run)
            self._auto_selected = True  # follow it
        self._after_action()

    def clone(self) -> None:
        row = self.current_row()
        if row is not None and row.spec_ok:
            self.clone_requested.emit(row.run)

    @staticmethod
    def _student_folder(row: Optional[RunRow]) -> Optional[Path]:
        folder = row.run.folder / "artifacts" / "student" if row is not None else None
        return folder if folder is not None and (folder / "student.json").is_file() else None

    def open_student(self) -> None:
        folder = self._student_folder(self.current_row())
        if folder is not None:
            self.student_requested.emit(str(folder))

    def open_folder(self) -> None:
        row = self.current_row()
        if row is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(row.run.folder)))

    def delete_current(self) -> None:
        row = self.current_row()
        if row is not None:
            self.delete_run(row.run)

    def delete_run(self, run: Run, confirm: bool = True) -> bool:
        """Delete a run folder, after a confirmation (a non-blocking box) unless confirm=False.
        Refused for a live run. Returns True when deleted now."""
        row = self.row(run.id)
        refusal = self._delete_refusal(row) if row is not None else None
        if refusal:
            self._show_error(f"'{row.name}' cannot be deleted.", refusal)
            return False
        if confirm:
            name = row.name if row else run.id
            box = QMessageBox(QMessageBox.Icon.Question, "Delete run",
                              f"Delete the run '{name}'?",
                              QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
            box.setInformativeText(f"Its folder, metrics, checkpoints and trained dictionary are "
                                   f"removed from disk:\n{run.folder}")
            box.setDefaultButton(QMessageBox.StandardButton.Cancel)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.accepted.connect(lambda: self.delete_run(run, confirm=False))
            box.finished.connect(lambda _r: setattr(self, "confirm_box", None))
            box.open()
            self.confirm_box = box
            return False
        try:
            shutil.rmtree(run.folder)
        except OSError as exc:
            self._show_error(f"Could not delete {run.folder}: {exc.strerror or exc}.",
                             "Check the folder's permissions.")
            return False
        self.refresh_runs()
        return True

    def _after_action(self) -> None:
        self._update_actions()
        self._soon.start()

    def _show_error(self, what: str, hint: str = "") -> None:
        self.error_box = show_error_box(self, what, hint)

    def _context_menu(self, pos) -> None:
        index = self.table.indexAt(pos)
        if index.isValid() and not self.table.selectionModel().isRowSelected(index.row(), index.parent()):
            self.select_runs([self.model.rows[index.row()].id])
        elif index.isValid():
            self.table.selectionModel().setCurrentIndex(index, QItemSelectionModel.SelectionFlag.NoUpdate)
        self._auto_selected = False
        self._update_actions()
        menu = QMenu(self)
        for a in (self.act_pause, self.act_resume, self.act_cancel, self.act_continue):
            menu.addAction(a)
        menu.addSeparator()
        for a in (self.act_clone, self.act_open):
            menu.addAction(a)
        menu.addSeparator()
        menu.addAction(self.act_delete)
        menu.exec(self.table.viewport().mapToGlobal(pos))

    # ================================================================== curves settings and export

    def _smoothing_changed(self, value: int) -> None:
        self.smoothing_label.setText(f"{value / 100:.2f}")
        self.curves.set_smoothing(value / 100)

    def _metrics_changed(self) -> None:
        chosen = [m for m, a in self.metric_actions.items() if a.isChecked()]
        if not chosen:  # at least one plot
            self.metric_actions["loss"].setChecked(True)
            return
        self.curves.set_metrics(chosen)

    def set_metrics(self, metrics: list[str]) -> None:
        for metric, action in self.metric_actions.items():
            action.blockSignals(True)
            action.setChecked(metric in metrics)
            action.blockSignals(False)
        self.curves.set_metrics([m for m in METRICS if m in metrics])

    def _add_plot_menu(self, plot: MetricPlot) -> None:
        menu = plot.getPlotItem().getViewBox().menu
        menu.addSeparator()
        menu.addAction("Export plot as PNG…", lambda: self.export_plot_dialog(plot.metric_key, "png"))
        menu.addAction("Export plot as SVG…", lambda: self.export_plot_dialog(plot.metric_key, "svg"))
        menu.addAction("Export plot data as CSV…", lambda: self.export_csv_dialog([plot.metric_key]))

    def _fill_export_menu(self) -> None:
        menu = self.export_menu
        menu.clear()
        shown = bool(self.curves.order)
        for metric in self.curves.plots:
            sub = menu.addMenu(METRICS.get(metric, metric))
            sub.addAction("PNG…", lambda m=metric: self.export_plot_dialog(m, "png"))
            sub.addAction("SVG…", lambda m=metric: self.export_plot_dialog(m, "svg"))
            sub.addAction("Data as CSV…", lambda m=metric: self.export_csv_dialog([m]))
            sub.setEnabled(shown)
        menu.addSeparator()
        menu.addAction("All plots as one PNG…", self.export_all_dialog).setEnabled(shown)
        menu.addAction("All shown data as CSV…", lambda: self.export_csv_dialog(None)).setEnabled(shown)

    def export_plot(self, metric: str, path: str | Path) -> Path:
        """Write the plot of `metric` as PNG or SVG (by the suffix)."""
        return self.curves.export_plot(metric, path)

    def export_all_png(self, path: str | Path) -> Path:
        """The whole grid of plots as it is on screen, as one PNG."""
        path = Path(path)
        self.curves.flush()
        if not self.curves.grab().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        return path

    def export_csv(self, path: str | Path, metrics: Optional[list[str]] = None) -> Path:
        """The shown runs' data: run, step, time, wall, then raw and smoothed value per metric
        (all plotted metrics, or these)."""
        return self.curves.write_csv(path, metrics)

    def _default_name(self, suffix: str, metric: Optional[str] = None) -> str:
        ids = self.curves.order
        base = self.row(ids[0]).name if len(ids) == 1 and self.row(ids[0]) else "runs"
        return f"{base}-{metric or 'curves'}.{suffix}"

    def export_plot_dialog(self, metric: str, suffix: str) -> None:
        kind = {"png": "PNG image (*.png)", "svg": "SVG drawing (*.svg)"}[suffix]
        path, _ = QFileDialog.getSaveFileName(self, f"Export {METRICS.get(metric, metric)}",
                                              self._default_name(suffix, metric), kind)
        if path:
            if not path.lower().endswith("." + suffix):
                path += "." + suffix
            self._guard(lambda: self.export_plot(metric, path), path)

    def export_all_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export plots", self._default_name("png"), "PNG image (*.png)")
        if path:
            self._guard(lambda: self.export_all_png(path), path)

    def export_csv_dialog(self, metrics: Optional[list[str]]) -> None:
        name = metrics[0] if metrics and len(metrics) == 1 else None
        path, _ = QFileDialog.getSaveFileName(self, "Export data", self._default_name("csv", name), "CSV (*.csv)")
        if path:
            self._guard(lambda: self.export_csv(path, metrics), path)

    def _guard(self, write, path: str) -> None:
        try:
            write()
        except OSError as exc:
            self._show_error(f"Could not write {path}: {getattr(exc, 'strerror', None) or exc}.",
                             "Choose another place.")


__all__ = ["TrainingView", "X_MODES"]


def run_details_html(row: RunRow, progress: str = "") -> str:
    """runs_list.details_html, with a line of its own for the pair jobs (a variant's blocks and
    held-out loss; a crosscoder's pair, latents and classes)."""
    import dataclasses
    import html

    spec = row.spec
    if spec is None or spec.kind not in ("variant", "crosscoder"):
        return details_html(row, progress)
    lines = details_html(dataclasses.replace(row, spec=None, evaluation={}), progress).split("<br>")
    ev, t = row.evaluation, spec.train
    if spec.kind == "variant":
        v = spec.variant
        what = [f"Variant of {spec.data.teacher}: blocks {v.layers}, objective {v.objective}"
                + (f" towards {v.distill_from}" if v.objective == "distill" else ""),
                f"{spec.data.corpus} · lr {t.lr:g} · {t.batch_size:,} documents a step · {t.total_steps:,} steps"]
        if isinstance(ev.get("val_loss_after"), (int, float)):
            what.append(f"held-out loss {ev['val_loss_before']:.3f} → {ev['val_loss_after']:.3f}")
    else:
        c = spec.crosscoder
        what = [f"Crosscoder {c.get('architecture')}, {c.get('d_latent', 0):,} latents · "
                f"{spec.pair.base} vs {spec.pair.variant} · {spec.data.hook} · {spec.data.corpus}",
                f"{t.batch_size:,} tokens a step · {t.total_steps:,} steps"]
        if isinstance(ev.get("fve_base"), (int, float)):
            what.append(f"held out: fve {ev['fve_base']:.3f} / {ev['fve_variant']:.3f} · L0 {ev['l0']:.1f} · "
                        f"base-only {ev.get('base_only', 0):,} · variant-only {ev.get('variant_only', 0):,} · "
                        f"shared {ev.get('shared', 0):,}")
    at = 1 + bool(progress if row.state == "running" and progress else (row.error or row.message))
    return "<br>".join(lines[:at] + [html.escape(w) for w in what] + lines[at:])
