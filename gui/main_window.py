"""The main window. Inspect tab: documents on the left, the inspect view (tokens + similar documents)
in the middle, the document's dictionary features on the right (gui/feature_session.py owns them,
their dashboard dock and the Dictionary menu's work). Training tab: runs and live curves (gui/training_view.py); Train > New Training Run
opens the wizard (gui/wizard.py).

Three worker threads (gui/worker.py), so nothing waits behind something slow:
  runner    teacher loading and corpus extraction (long, with progress, cancellable),
  inspector one document's token view (~50 ms) on a twin of the teacher (gui/shadow.py),
  io        reading documents, so a corpus appears while the teacher still loads.
Results come back as plain objects on the GUI thread and are cached per layer in memory (and on
disk by core). core and torch are imported inside the tasks, never on the GUI thread.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QLabel, QMainWindow, QMessageBox, QSpinBox, QSplitter,
                               QStyle, QTabWidget, QVBoxLayout, QWidget)

from core import paths
from core.documents import SUPPORTED, Corpus, Document, from_text, load_demo, load_paths
from gui.dialogs import PasteDialog, ProblemsDock, show_error_box
from gui.documents_panel import DocumentsPanel, Entry
from gui.feature_session import STARTER, FeatureSession
from gui.neighbours import Neighbour, NeighboursPanel
from gui.recent import DEMO, RecentList
from gui.task_status import TaskStatus
from gui.token_view import TokenPanel
from gui.worker import Task, TaskRunner

SETTINGS_VERSION = "v1"
TOKEN_CACHE_SIZE = 256
N_NEIGHBOURS = 10


def settings_store() -> QSettings:
    """Settings live in the data dir (DISTILLSCOPE_DATA_DIR overrides it, so tests are isolated)."""
    return QSettings(str(paths.data_dir() / "distillscope-gui.ini"), QSettings.Format.IniFormat)


class MainWindow(QMainWindow):
    teacher_changed = Signal()
    corpus_changed = Signal()
    tokens_shown = Signal()  # the token view shows a document's tokens
    neighbours_shown = Signal()  # the neighbours table shows rows
    vectors_ready = Signal(int)  # corpus vectors of this layer are in memory
    student_changed = Signal()  # a student was opened or closed

    def __init__(self, teacher=None, layer: int = 6, settings: Optional[QSettings] = None, parent=None,
                 dictionary=STARTER):
        """`dictionary`: a dictionary folder or file to open, "starter" (the one used last, else
        the starter dictionary when it is installed), or None."""
        super().__init__(parent)
        self.teacher = None
        self.shadow = None  # the teacher's twin for the inspector thread
        self.job_teacher = None  # and its twin for training jobs
        self.wizard_teacher = None  # and one for the wizard's cost estimate (its own thread)
        self.corpus = Corpus(name="no corpus")
        self.student = None  # core.student.Student, for side-by-side bars and contrasts
        self.student_name = ""
        self.pasted: list[Document] = []
        self.entries: list[Entry] = []
        self.layer = max(0, layer)
        self.settings = settings or settings_store()
        self.recent = RecentList(self.settings, f"{SETTINGS_VERSION}/recent")
        self._gen = 0  # bumped when the teacher or corpus changes: older results are stale
        self._teacher_gen = 0
        self._vectors: dict = {}  # layer -> CorpusVectors of (teacher, corpus)
        self._tokens: collections.OrderedDict = collections.OrderedDict()  # LRU of TokenViews
        self._extract_task: Optional[Task] = None
        self._token_task: Optional[Task] = None
        self._teacher_task: Optional[Task] = None
        self._teacher_error = ""
        self._teacher_message = ""
        self.error_box: Optional[QMessageBox] = None
        self.paste_dialog: Optional[PasteDialog] = None

        self.runner = TaskRunner(self)
        self.inspector = TaskRunner(self)
        self.io = TaskRunner(self, torch_threads=0)
        for runner in (self.runner, self.inspector, self.io):
            runner.failed.connect(self._task_failed)
            runner.cancelled.connect(self._task_cancelled)
        self.runner.progress.connect(self._task_progress)

        self._build_widgets()
        self._build_actions()
        self.status = TaskStatus(self.statusBar(), [self.runner, self.io], on_cancel=self.cancel_task,
                                 on_problems=lambda: self.problems.setVisible(not self.problems.isVisible()))
        self.setAcceptDrops(True)
        self.resize(1280, 800)
        self._layer_timer = QTimer(self, singleShot=True, interval=300)
        self._layer_timer.timeout.connect(lambda: self.set_layer(self.layer_spin.value()))
        self._computing_timer = QTimer(self, singleShot=True, interval=150)
        self._computing_timer.timeout.connect(self._show_computing)
        self._update_title()
        self._refresh_inspect()
        if teacher is not None:
            self.set_teacher(teacher)
        self.features.open_at_start(dictionary)

    # ================================================================== construction

    def _build_widgets(self) -> None:
        self.documents = DocumentsPanel()
        self.documents.selected.connect(lambda _row: self._refresh_inspect())
        self.token_panel = TokenPanel()
        self.neighbours = NeighboursPanel()
        self.neighbours.activated.connect(self.select_corpus_document)
        self.neighbours.export_requested = self.export_neighbours_csv
        self.features = FeatureSession(self)
        from gui.contrast_session import ContrastSession

        self.contrast = ContrastSession(self)
        from gui.agreement_session import AgreementSession

        self.agreement = AgreementSession(self)
        from gui.steering_session import SteeringSession

        self.steering = SteeringSession(self)
        from gui.crosscoder_session import CrosscoderSession

        self.crosscoder = CrosscoderSession(self)

        middle = QSplitter(Qt.Orientation.Vertical)
        middle.addWidget(self.token_panel)
        middle.addWidget(self.neighbours)
        middle.setSizes([440, 330])
        middle.setChildrenCollapsible(False)
        main = QSplitter(Qt.Orientation.Horizontal)
        main.addWidget(self.documents)
        main.addWidget(middle)
        main.addWidget(self.features.bars)
        main.setSizes([330, 520, 430])
        main.setChildrenCollapsible(False)
        self.inspect_splitter = main
        inspect = QWidget()
        layout = QVBoxLayout(inspect)
        layout.setContentsMargins(8, 6, 8, 4)
        layout.addWidget(main)
        # The Training tab (and the job runner, which imports torch) is built when first shown.
        self.training_tab = QWidget()
        QVBoxLayout(self.training_tab).setContentsMargins(0, 0, 0, 0)
        self.training_view = None
        self.run_bridge = None
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(inspect, "Inspect")
        self.tabs.addTab(self.training_tab, "Training")
        self.tabs.addTab(self.contrast.view, "Contrast")
        self.tabs.addTab(self.agreement.view, "Agreement")
        self.tabs.addTab(self.steering.view, "Steering")
        self.tabs.addTab(self.crosscoder.view, "Crosscoder")
        self.tabs.currentChanged.connect(lambda i: self.ensure_training_view() if i == 1 else None)
        self.setCentralWidget(self.tabs)

        self.problems = ProblemsDock(self)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.problems)
        self.problems.hide()

    def _action(self, text, slot, shortcut=None, icon=None, tip="") -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)

        def trigger(_checked: bool = False) -> None:  # drops `checked` and the slot's return value
            slot()

        action.triggered.connect(trigger)
        self.addAction(action)  # shortcuts work even with the menu bar hidden
        return action

    def _build_actions(self) -> None:
        SP = QStyle.StandardPixmap
        self.act_open = self._action("&Open Files…", self.open_files_dialog, "Ctrl+O", SP.SP_FileIcon,
                                     f"Open text files ({SUPPORTED})")
        self.act_folder = self._action("Open &Folder…", self.open_folder_dialog, "Ctrl+Shift+O",
                                       SP.SP_DirOpenIcon, "Open every supported file in a folder")
        self.act_paste = self._action("&Paste Text…", self.paste_dialog_open, "Ctrl+Shift+V",
                                      SP.SP_FileDialogContentsView, "Inspect a pasted text")
        self.act_demo = self._action("Open &Demo Corpus", self.open_demo, tip="945 labeled fortunes")
        self.act_provenance = self._action("Open &Provenance Demo Set", lambda: self.open_demo("demo-provenance"),
                                           tip="Demo texts beside continuations the bundled teacher wrote "
                                           "from their opening words: human vs machine")
        self.act_ood = self._action("Open Out-of-Distribution Demo &Set", lambda: self.open_demo("demo-ood"),
                                    tip="Python standard-library docstrings: text unlike the fortunes")
        self.act_large = self._action("Open &Large Demo Corpus", lambda: self.open_demo("demo-large"),
                                      tip="13,698 fortunes from 37 collections: the starter dictionary's "
                                      "and the demo student's training text")
        self.act_png = self._action("Token View as &PNG…", self.export_token_png)
        self.act_csv = self._action("&Neighbours as CSV…", self.export_neighbours_csv)
        self.act_quit = self._action("&Quit", self.close, "Ctrl+Q")
        self.act_recompute = self._action("&Recompute", self.recompute, "F5", SP.SP_BrowserReload,
                                          "Recompute the token view and document vectors (F5)")
        self.act_cancel = self._action("&Cancel Task", self.cancel_task, "Esc", SP.SP_BrowserStop,
                                       "Cancel the running task (Esc)")
        self.act_filter = self._action("&Filter Documents", self.documents.focus_filter, "Ctrl+F")
        self.act_bundled = self._action("Load &Bundled Teacher", lambda: self.load_teacher("bundled"))
        self.act_model_dir = self._action("Load Model &Folder…", self.load_model_folder_dialog)
        self.act_new_run = self._action("&New Training Run…", self.new_training_run, "Ctrl+T",
                                        SP.SP_MediaPlay, "Set up and launch a training run (Ctrl+T)")
        self.act_open_spec = self._action("Open Job &Spec…", self.open_spec_dialog,
                                          tip="Open a TOML job spec in the training wizard")
        self.act_show_inspect = self._action("&Inspect", lambda: self.tabs.setCurrentIndex(0), "Ctrl+1")
        self.act_show_training = self._action("&Training Runs", lambda: self.tabs.setCurrentIndex(1), "Ctrl+2")
        self.act_show_contrast = self._action("&Contrast", lambda: self.tabs.setCurrentIndex(2), "Ctrl+3")
        self.act_show_agreement = self._action("&Agreement (student vs teacher)",
                                               lambda: self.tabs.setCurrentIndex(3), "Ctrl+4")
        self.act_show_steering = self._action("&Steering", lambda: self.tabs.setCurrentWidget(self.steering.view),
                                              "Ctrl+5", tip="Steer generation with sliders (Ctrl+5)")
        self.act_cancel.triggered.connect(self.steering.cancel_if_shown)  # Esc stops the tab's generation
        self.act_show_crosscoder = self._action("C&rosscoder (base vs variant)",
                                                lambda: self.tabs.setCurrentWidget(self.crosscoder.view), "Ctrl+6",
                                                tip="Latents of a crosscoder: histograms, lists, dashboards (Ctrl+6)")
        self.act_open_crosscoder = self._action("Open &Crosscoder…", self._open_crosscoder_dialog,
                                                tip="A crosscoder folder (a crosscoder run's artifacts/crosscoder)")
        self.act_cancel.triggered.connect(self.crosscoder.cancel_if_shown)
        self.act_student = self._action("Open &Student…", self.open_student_dialog, "Ctrl+Shift+S",
                                        tip="A distilled student folder (a student run's artifacts/student): "
                                        "its feature bars beside the teacher's, and contrasts on its vectors")
        self.act_close_student = self._action("Close Student", lambda: self.set_student(None))
        self.act_close_student.setEnabled(False)
        self.act_gguf = self._action("Load &GGUF File…", self.load_gguf_dialog)
        f = self.features
        self.act_dictionary = self._action("&Open Dictionary Folder…", f.open_dictionary_dialog,
                                           tip="A SAELens folder (cfg.json + sae_weights.safetensors) or "
                                           "Gemma Scope parameters (params.npz / params.safetensors)")
        self.act_starter = self._action("Use &Starter Dictionary", lambda: f.open_starter(),
                                        tip="The dictionary that ships for the bundled teacher (layer 6)")
        # Ctrl+F filters the documents list already; Ctrl+Shift+F searches features.
        self.act_search = self._action("Search &Features…", f.open_search, "Ctrl+Shift+F",
                                       tip="Find features by label text or by the token they fire on")
        self.act_export_bars = self._action("&Export Feature Bars…", lambda: f.export_bars_dialog(),
                                            tip="The feature bars as a PNG (2x) or every score as CSV")
        self.act_build_index = self._action("&Build Feature Index", lambda: f.schedule_index(force=True),
                                            tip="Encode the open corpus once for dashboards and search by token")

        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        for a in (self.act_open, self.act_folder, self.act_paste):
            file_menu.addAction(a)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addAction(self.act_demo)
        file_menu.addAction(self.act_provenance)
        file_menu.addAction(self.act_ood)
        file_menu.addAction(self.act_large)
        file_menu.addSeparator()
        export = file_menu.addMenu("&Export")
        export.addAction(self.act_png)
        export.addAction(self.act_csv)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)

        view = bar.addMenu("&View")
        view.addAction(self.act_filter)
        view.addAction(self.act_recompute)
        view.addAction(self.problems.toggleViewAction())
        view.addSeparator()
        view.addAction(self.act_show_inspect)
        view.addAction(self.act_show_training)
        view.addAction(self.act_show_contrast)
        view.addAction(self.act_show_agreement)
        view.addAction(self.act_show_steering)
        view.addAction(self.act_show_crosscoder)
        train = bar.addMenu("&Train")
        train.addAction(self.act_new_run)
        train.addAction(self.act_open_spec)
        model = bar.addMenu("&Model")
        for a in (self.act_bundled, self.act_model_dir, self.act_gguf):
            model.addAction(a)
        model.addSeparator()
        model.addAction(self.act_student)
        model.addAction(self.act_close_student)
        model.addAction(self.act_open_crosscoder)
        model.addSeparator()
        model.addAction(self.act_cancel)
        dictionary = bar.addMenu("&Dictionary")
        for a in (self.act_dictionary, self.act_starter):
            dictionary.addAction(a)
        dictionary.addSeparator()
        for a in (self.act_search, self.act_build_index, self.act_export_bars):
            dictionary.addAction(a)

        self.layer_spin = QSpinBox()
        self.layer_spin.setRange(0, 127)
        self.layer_spin.setValue(self.layer)
        self.layer_spin.setToolTip("Residual stream after this transformer block (0 = first block)")
        self.layer_spin.valueChanged.connect(lambda _v: self._layer_timer.start())
        tools = self.addToolBar("Main")
        tools.setObjectName("main-toolbar")
        tools.setMovable(False)
        tools.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for a in (self.act_open, self.act_folder, self.act_paste):
            tools.addAction(a)
        tools.addSeparator()
        tools.addWidget(QLabel("  Layer: "))
        tools.addWidget(self.layer_spin)
        tools.addAction(self.act_recompute)
        tools.addSeparator()
        tools.addAction(self.act_new_run)

    # ================================================================== teacher

    def load_teacher(self, source) -> None:
        """Load a teacher in the background ('bundled', an HF folder or a .gguf file)."""
        self.runner.cancel("extract")  # its vectors would belong to the old teacher
        self._teacher_error = ""
        self._teacher_task = self.runner.submit(Task(
            "teacher", lambda state: _load_twins(source, state),
            title="Loading teacher…", on_result=lambda pair: self.set_teacher(*pair),
            on_error=self._teacher_failed))
        self._refresh_inspect()

    def set_teacher(self, teacher, shadow=None) -> None:
        """Use a loaded teacher (core.models.Teacher). Without a shadow twin for the inspector
        thread, both twins are made here (a module copy sharing the weights: milliseconds). A
        third twin is lent to training jobs and a fourth to the wizard's cost estimate, which times
        the teacher on the wizard's thread while the runner may be extracting on the main one (two
        threads capturing on one module break each other's hooks). They are made now, before any
        thread runs the teacher (a copy taken during another thread's capture would copy its hooks)."""
        from gui.shadow import twins

        if shadow is None:
            teacher, shadow = twins(teacher)
        self.teacher, self.shadow = teacher, shadow
        self.job_teacher = twins(teacher)[1]
        self.wizard_teacher = twins(teacher)[1]
        if self.run_bridge is not None:
            self.run_bridge.share_teacher(self.job_teacher)
        self._gen += 1
        self._teacher_gen += 1
        self._vectors.clear()
        self._tokens.clear()
        self.layer_spin.blockSignals(True)
        self.layer_spin.setRange(0, teacher.n_layers - 1)
        self.layer = min(self.layer, teacher.n_layers - 1)
        self.layer_spin.setValue(self.layer)
        self.layer_spin.blockSignals(False)
        self._update_title()
        self._set_status(f"Loaded {teacher.name}: {teacher.n_layers} layers, width {teacher.d_model}.")
        self.teacher_changed.emit()
        self._schedule_extraction()
        self._refresh_inspect()

    def _teacher_failed(self, what: str, hint: str) -> None:
        self._teacher_error = what
        self._refresh_inspect()

    def teacher_loading(self) -> bool:
        return self._teacher_task is not None and self._teacher_task.outcome is None

    # ================================================================== documents

    def open_paths(self, paths_, add: bool = False) -> None:
        """Read files/folders in the background; replace the corpus, or add to it (drops)."""
        paths_ = [str(p) for p in paths_]
        if not paths_:
            return
        self._set_status(f"Reading {', '.join(Path(p).name for p in paths_[:3])}…")
        self.io.submit(Task("documents", lambda _state: load_paths(paths_), title="Reading documents",
                            on_result=lambda corpus: self._documents_read(corpus, paths_, add)))

    def open_demo(self, name: str = "demo") -> None:
        self._set_status("Reading the demo corpus…")
        self.io.submit(Task("documents", lambda _state: load_demo(name), title="Reading the demo corpus",
                            on_result=lambda corpus: self._documents_read(
                                corpus, [DEMO] if name == "demo" else [], False)))

    # ================================================================== student

    def open_student_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a student folder", str(paths.data_dir() / "runs"))
        if folder:
            self.open_student(folder)

    def _open_crosscoder_dialog(self) -> None:
        self.tabs.setCurrentWidget(self.crosscoder.view)
        self.crosscoder.open_dialog()

    def open_student(self, folder) -> Task:
        """Load a distilled student (core.student.Student) in the background."""
        def load(_state):
            from core.student import Student

            return Student.load(folder)

        name = Path(folder).parent.parent.name if Path(folder).name == "student" else Path(folder).name
        return self.io.submit(Task("student", load, title="Loading the student",
                                   on_result=lambda student: self.set_student(student, name),
                                   on_error=self._show_error))

    def open_student_and_agreement(self, folder: str) -> Task:
        """From the Training tab: open a finished run's student and show its agreement."""
        self.tabs.setCurrentIndex(3)
        return self.open_student(folder)

    def set_student(self, student, name: str = "") -> None:
        self.student, self.student_name = student, (name if student is not None else "")
        self.act_close_student.setEnabled(student is not None)
        if student is not None:
            self._set_status(f"Opened the student {name}: {student.name}.")
        self.student_changed.emit()

    def _documents_read(self, corpus: Corpus, sources: list[str], add: bool) -> None:
        for source in sources:
            self.recent.add(source)
        if not corpus.documents:
            self._show_problems(corpus.problems)
            self._set_status(f"No documents could be read from {corpus.name}; "
                             "the open corpus is unchanged. See Problems.")
            return
        if add and self.corpus.documents:
            merged = Corpus(list(self.corpus.documents), list(self.corpus.problems),
                            name=f"{self.corpus.name} + {corpus.name}")
            merged.extend(corpus)
            self._set_status(f"Added {len(corpus):,} documents from {corpus.name}.")
            self.set_corpus(merged, select=len(self.corpus.documents))
        else:
            self._set_status(f"Opened {corpus.name}: {len(corpus):,} documents.")
            self.set_corpus(corpus)

    def set_corpus(self, corpus: Corpus, select: int = 0) -> None:
        """Show `corpus` (replacing the open one) and compute its document vectors."""
        self.corpus = corpus
        self._gen += 1
        self._vectors.clear()
        self.runner.cancel("extract")
        self._rebuild_entries()
        self._show_problems(corpus.problems)
        self._update_title()
        self.corpus_changed.emit()
        self._schedule_extraction()
        if self.entries:
            self.documents.select_row(min(select, len(self.entries) - 1))
        self._refresh_inspect()

    def paste_text(self, text: str, label: Optional[str] = None) -> bool:
        """Add a pasted document (inspected and compared with the corpus, not part of it)."""
        corpus = from_text(text, label, id=f"pasted-{len(self.pasted) + 1}")
        if not corpus.documents:
            self._show_error(corpus.problems[0].message if corpus.problems else "Nothing to add.")
            return False
        self.inspect_document(corpus.documents[0], f"the pasted text as {corpus.documents[0].id}")
        return True

    def inspect_document(self, doc: Document, what: str) -> None:
        """Select a document in Inspect: the open corpus's own when it holds the same id and text,
        else added beside it (as a pasted text is); the same document again is not added twice."""
        rows = [r for r, e in enumerate(self.entries) if (e.doc.id, e.doc.text) == (doc.id, doc.text)]
        if not rows:
            self.pasted.append(doc)
            self._rebuild_entries()
            rows = [len(self.entries) - 1]
        self.documents.select_row(rows[0])
        self.tabs.setCurrentIndex(0)
        self._set_status(f"Showing {what}.")

    def _rebuild_entries(self) -> None:
        self.entries = [Entry(d, i) for i, d in enumerate(self.corpus.documents)]
        self.entries += [Entry(d, None) for d in self.pasted]
        self.documents.set_entries(self.entries)
        self.features.entries_changed()

    def select_corpus_document(self, corpus_index: int) -> None:
        self.documents.select_row(corpus_index)

    def _show_problems(self, problems) -> None:
        self.problems.set_problems(problems)
        n = len(problems)
        self.status.set_problem_count(n)
        if n:
            self.problems.show()  # a dock, not a dialog: nothing to dismiss, focus stays put
            self.resizeDocks([self.problems], [min(60 + 22 * n, 190)], Qt.Orientation.Vertical)

    # ================================================================== layer, caches and tasks

    def set_layer(self, layer: int) -> None:
        if self.teacher is not None:
            layer = min(max(layer, 0), self.teacher.n_layers - 1)
        if self.layer_spin.value() != layer:
            self.layer_spin.blockSignals(True)
            self.layer_spin.setValue(layer)
            self.layer_spin.blockSignals(False)
        if layer == self.layer:
            return
        self.layer = layer
        task = self._extract_task
        if task is not None and task.outcome is None and task.layer != layer:
            self.runner.cancel("extract")
        self._schedule_extraction()
        self._refresh_inspect()
        self.contrast.refresh_choices()

    def recompute(self) -> None:
        """F5: forget this layer's results in memory and compute them again (the disk cache stays)."""
        self._vectors.pop(self.layer, None)
        for key in [k for k in self._tokens if k[2] == self.layer]:
            del self._tokens[key]
        self._schedule_extraction(force=True)
        self._refresh_inspect()

    def cancel_task(self) -> None:
        if self.status.busy():
            self._set_status("Cancelling…")
        for runner in (self.runner, self.inspector, self.io):
            runner.cancel()

    def extraction_pending(self) -> bool:
        task = self._extract_task
        return (task is not None and task.outcome is None and task.layer == self.layer
                and task.gen == self._gen)

    def _schedule_extraction(self, force: bool = False) -> None:
        if self.teacher is None or not self.corpus.documents or self.layer in self._vectors:
            return
        if self.extraction_pending() and not force:
            return
        teacher, docs, layer, gen = self.teacher, list(self.corpus.documents), self.layer, self._gen
        task = Task("extract", lambda state: _corpus_vectors(teacher, docs, layer, state),
                    title=f"Document vectors at layer {layer}",
                    on_result=lambda cv: self._vectors_done(gen, layer, cv))
        task.layer, task.gen = layer, gen
        self._extract_task = self.runner.submit(task)

    def _vectors_done(self, gen: int, layer: int, cv) -> None:
        if gen != self._gen:
            return
        self._vectors[layer] = cv
        self._set_status(f"Document vectors ready: {len(cv.ids):,} documents at layer {layer}.")
        self.vectors_ready.emit(layer)
        if layer == self.layer:
            self._refresh_inspect()

    def _tokens_done(self, teacher_gen: int, key, result) -> None:
        if teacher_gen != self._teacher_gen:
            return
        view, scored = result
        if scored is not None:
            self.features.store(key[:2], *scored)
        self._tokens[key] = view
        while len(self._tokens) > TOKEN_CACHE_SIZE:
            self._tokens.popitem(last=False)
        if key == self._token_key(self.current_entry()):
            self._refresh_inspect()

    def _tokens_failed(self, key, what: str, hint: str) -> None:
        if key == self._token_key(self.current_entry()):
            self.token_panel.show_message(f"Could not compute the token view.\n\n{what}\n{hint}".strip())

    def _show_computing(self) -> None:
        entry = self.current_entry()
        if entry is not None and self.teacher is not None and self._token_key(entry) not in self._tokens:
            self.token_panel.show_message("Computing…", header=entry.doc.id)

    def _token_key(self, entry: Optional[Entry]):
        return None if entry is None else (entry.doc.id, entry.doc.text, self.layer)

    # ================================================================== the inspect view

    def current_entry(self) -> Optional[Entry]:
        row = self.documents.current_row()
        return self.entries[row] if 0 <= row < len(self.entries) else None

    def _refresh_inspect(self) -> None:
        entry = self.current_entry()
        view = self._show_tokens(entry)
        self._show_neighbours(entry, view)
        self.features.show_document(entry)

    def _show_tokens(self, entry: Optional[Entry]):
        if entry is None:
            self.token_panel.show_message("Open a document to inspect it." if not self.entries
                                          else "Select a document to inspect it.")
            return None
        if self.teacher is None:
            if self.teacher_loading():
                msg = f"Loading the teacher model…\n\n{self._teacher_message}".strip()
            elif self._teacher_error:
                msg = f"No teacher loaded: {self._teacher_error}\n\nUse the Model menu to load one."
            else:
                msg = "No teacher loaded. Use the Model menu to load one."
            self.token_panel.show_message(msg, header=entry.doc.id)
            return None
        key = self._token_key(entry)
        view = self._tokens.get(key)
        if view is None:
            # The answer takes ~50 ms: say "Computing" only if it is slower, so that walking
            # the list with the arrow keys does not flicker.
            self._computing_timer.start()
            task = self._token_task
            if task is None or task.outcome is not None or task.token_key != key:
                shadow, text, layer, gen = self.shadow, entry.doc.text, self.layer, self._teacher_gen
                job = self.features.job_for_layer(layer)  # score the features in the same pass
                threads = self._inspect_threads()
                self._token_task = self.inspector.submit(Task(
                    "tokens", lambda state: _inspect_document(shadow, text, layer, job, state, threads),
                    on_result=lambda v: self._tokens_done(gen, key, v),
                    on_error=lambda what, hint: self._tokens_failed(key, what, hint)))
                self._token_task.token_key = key
                self._token_task.score_gen = job.gen if job is not None else None
            return None
        self._tokens.move_to_end(key)
        n = sum(1 for b in view.is_bos if not b)
        if not self.features.show_feature_tokens(entry, view, self.token_panel):
            self.token_panel.show_tokens(
                view.tokens, view.values, view.is_bos,
                header=f"{entry.doc.id}  ·  residual norm after block {self.layer}  ·  {n} tokens")
        self.tokens_shown.emit()
        return view

    def refresh_tokens(self) -> None:
        """Redraw the token view (the selected feature changed: its colours, or back to norms)."""
        self._show_tokens(self.current_entry())

    def _show_neighbours(self, entry: Optional[Entry], view) -> None:
        panel = self.neighbours
        if entry is None:
            panel.show_message("Open a document to see the most similar documents of the corpus.")
            return
        header = f"Most similar documents to {entry.doc.id}"
        cv = self._vectors.get(self.layer)
        if cv is None:
            if not self.corpus.documents:
                panel.show_message("Open a corpus to compare this document with.", header)
            elif self.teacher is None:
                panel.show_message("Waiting for the teacher model…", header)
            elif self.extraction_pending():
                panel.show_message(f"Computing document vectors for {len(self.corpus):,} documents "
                                   f"at layer {self.layer}…\n\nProgress is shown in the status bar; "
                                   "this happens once per corpus and layer.", header)
            else:
                panel.show_message("Document vectors are not computed. Press F5 to compute them.", header)
            return
        if entry.corpus_index is not None:
            pairs = cv.neighbours(entry.corpus_index, N_NEIGHBOURS)
        elif view is not None:
            pairs = cv.neighbours_of(view.pooled, N_NEIGHBOURS)
        else:
            panel.show_message("Computing…", header)
            return
        docs = self.corpus.documents
        rows = [Neighbour(rank, cos, docs[i].label or "", docs[i].id, docs[i].text, i)
                for rank, (i, cos) in enumerate(pairs, start=1)]
        panel.show_rows(rows, header=f"Most similar documents to {entry.doc.id}", note=f"Cosine of z-normalized mean-pooled residuals after block "
                                   f"{self.layer}, among {len(docs):,} documents. Double-click to open.")
        self.neighbours_shown.emit()

    # ================================================================== task feedback

    def _task_progress(self, task: Task, done: int, total: int, message: str) -> None:
        self.status.show_progress(task, done, total, message)
        if task.key == "teacher" and message:
            self._teacher_message = message
            if self.teacher is None:
                self._refresh_inspect()

    def _task_failed(self, task: Task, what: str, hint: str) -> None:
        # Token view and feature errors are shown in their views; quiet tasks report themselves.
        if task.key != "tokens" and not getattr(task, "quiet", False):
            self._show_error(what, hint)
            self._refresh_inspect()

    def _task_cancelled(self, task: Task) -> None:
        if task.key != "tokens" and not getattr(task, "quiet", False):
            self._set_status(f"Cancelled: {task.title}")
            self._refresh_inspect()

    def is_idle(self) -> bool:
        return not (self.runner.is_busy() or self.io.is_busy() or self.inspector.is_busy())

    def _set_status(self, text: str) -> None:
        self.status.set_message(text)

    def _show_error(self, what: str, hint: str = "") -> None:
        self.error_box = show_error_box(self, what, hint)
        self._set_status(what)

    def _update_title(self) -> None:
        model = self.teacher.name if self.teacher is not None else "no teacher"
        corpus = f"{self.corpus.name} ({len(self.corpus):,} documents)" if self.corpus.documents else "no corpus"
        self.setWindowTitle(f"distillscope — {model} — {corpus}")

    # ================================================================== dialogs, recent, export

    def open_files_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Open Files", self.recent.last_folder(),
            "Documents (*.txt *.md *.markdown *.jsonl *.csv *.tsv);;All files (*)")
        if files:
            self.open_paths(files)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open Folder", self.recent.last_folder())
        if folder:
            self.open_paths([folder])

    def paste_dialog_open(self) -> PasteDialog:
        dialog = PasteDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.paste_text(*dialog.values()))
        dialog.open()
        self.paste_dialog = dialog
        return dialog

    def load_model_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Load Model Folder (config.json + safetensors)",
                                                  self.recent.last_folder())
        if folder:
            self.load_teacher(folder)

    def load_gguf_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load GGUF Model", self.recent.last_folder(), "GGUF (*.gguf)")
        if path:
            self.load_teacher(path)

    def _fill_recent_menu(self) -> None:
        self.recent.fill_menu(self.recent_menu, self._open_recent, self.open_demo)

    def _open_recent(self, source: str) -> None:
        if not Path(source).exists():
            self.recent.remove(source)
            self._show_error(f"{source} no longer exists.", "It was removed from the recent list.")
            return
        self.open_paths([source])

    def export_token_png(self, path: Optional[str] = None) -> Optional[str]:
        if not self.token_panel.tokens:
            self._show_error("There is no token view to export.", "Select a document first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export Token View", "tokens.png", "PNG (*.png)")
        if path and not self.token_panel.grab().save(path, "PNG"):
            self._show_error(f"Could not write {path}.", "Check that the folder exists and is writable.")
            return None
        return path or None

    def export_neighbours_csv(self, path: Optional[str] = None) -> Optional[str]:
        if not self.neighbours.model.rows:
            self._show_error("There are no neighbours to export.", "Select a document and wait for them.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export Neighbours", "neighbours.csv", "CSV (*.csv)")
        if not path:
            return None
        try:
            self.neighbours.write_csv(path)
        except OSError as exc:
            self._show_error(f"Could not write {path}: {exc.strerror}.", "Choose another place.")
            return None
        return path

    # ================================================================== drag and drop, close

    def dragEnterEvent(self, event) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        files = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.open_paths(files, add=True)

    # ================================================================== training

    def ensure_training_view(self):
        if self.training_view is None:
            from gui.run_bridge import RunBridge
            from gui.training_view import TrainingView

            self.run_bridge = RunBridge(self)
            self.run_bridge.share_teacher(self.job_teacher)
            self.training_view = TrainingView(self.run_bridge)
            self.training_view.clone_requested.connect(lambda run: self.new_training_run(run.spec))
            self.training_view.student_requested.connect(self.open_student_and_agreement)
            self.training_view.new_run_requested.connect(lambda: self.new_training_run())
            self.training_tab.layout().addWidget(self.training_view)
        return self.training_view

    def new_training_run(self, spec=None):
        """Open the wizard (prefilled with `spec`, e.g. a cloned run's); Launch starts the run."""
        from gui.wizard import TrainingWizard

        self.wizard = TrainingWizard(spec, teacher=self.wizard_teacher, parent=self)
        self.wizard.accepted.connect(lambda: self.launch_run(self.wizard.spec()))
        self.wizard.open()
        return self.wizard

    def launch_run(self, spec):
        self.ensure_training_view()
        self.tabs.setCurrentIndex(1)
        run = self.run_bridge.launch(spec)
        self._set_status(f"Started training run {run.id}")
        return run

    def open_spec_dialog(self, path: Optional[str] = None):
        from core.errors import DistillscopeError
        from core.jobs import JobSpec

        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open Job Spec", "", "TOML (*.toml)")
        if not path:
            return None
        try:
            spec = JobSpec.from_toml_file(path)
        except DistillscopeError as exc:
            self._show_error(exc.what, exc.hint)
            return None
        return self.new_training_run(spec)

    def _inspect_threads(self) -> int:
        """Torch threads for the document a person waits on: every core while no job or corpus
        task computes (the pass is under a second and the GUI thread idles meanwhile), else the
        inspector's share, which leaves a core to the GUI."""
        if self.training_active() or self.runner.is_busy():
            return self.inspector.torch_threads
        return max(self.inspector.torch_threads, os.cpu_count() or 1)

    def training_active(self) -> bool:
        return self.run_bridge is not None and self.run_bridge.active_run_id() is not None

    def closeEvent(self, event) -> None:
        if self.training_active() and self.isVisible():
            answer = QMessageBox.question(
                self, "Training in progress",
                "A training run is in progress. Quit anyway? It stops at a checkpoint, and "
                "Resume in the Training tab continues it later.")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Cancel and join the worker threads. A model load cannot be interrupted inside
        transformers, so closing may wait for it to finish; the window is hidden meanwhile."""
        self.hide()
        self.features.shutdown()
        self.steering.shutdown()
        self.crosscoder.shutdown()
        if self.training_view is not None:
            self.training_view.shutdown()
        if self.run_bridge is not None:
            self.run_bridge.shutdown()  # cancels the active run, which writes a checkpoint
        for runner in (self.runner, self.inspector, self.io):
            if not runner.shutdown(timeout_ms=5_000):
                runner._thread.wait()  # never leave a running QThread behind: Qt would abort


# Task bodies: they import core's torch-using modules on the worker thread, never the GUI's.

def _load_twins(source, state):
    from gui.shadow import load_teacher_twins

    return load_teacher_twins(source, state)


def _corpus_vectors(teacher, documents, layer, state):
    from core.inspect import corpus_vectors

    return corpus_vectors(teacher, documents, layer, state=state)


def _inspect_document(shadow, text, layer, job, state, threads):
    import torch

    from gui.feature_session import inspect_document

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return inspect_document(shadow, text, layer, job, state)
    finally:
        torch.set_num_threads(before)
