"""New training run: model and data -> method -> settings -> cost, then Launch.

The settings page is generated from the documented configs (tooltips are their descriptions),
every page is checked by `JobSpec.validate()` before Next, and the cost page measures this
device with a short calibration in a worker thread. A run's spec can be cloned back in.
"""

from __future__ import annotations

import re
import sys
from typing import Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton,
                               QRadioButton, QScrollArea, QSpinBox, QStackedWidget, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget, QWizard, QWizardPage)

from core.dictionaries.base import REGISTRY
from core.jobs.spec import DERIVED_SAE_FIELDS, DataSpec, JobSpec, RunSpec, SpecError, describe_spec
from core.models import HookPoint
from gui.config_form import ConfigForm
from gui.worker import Task, TaskRunner

ERROR_STYLE = "color: #b00020;"
HOOK_KINDS = ("resid_post", "mlp_in", "mlp_out")
DATA_FORM_FIELDS = ("max_length", "source", "batch_tokens", "device")
STUDENT = "student"  # the method page's name for the student-distillation job
STUDENT_SUMMARY = ("A tiny transformer over the teacher's tokenizer learns to predict the teacher's "
                   "z-normalized mean-pooled residual at the chosen layer (seed 000): document vectors, "
                   "feature bars and contrast scores like the teacher's, 19x faster than the bundled "
                   "teacher on a CPU (about 1,000x fewer FLOPs than a 4B teacher). Reads resid_post hooks.")


def _field_named(message: str) -> Optional[str]:
    found = re.search(r"'(\w+)'", message)
    return found.group(1) if found else None


def _error_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet(ERROR_STYLE)
    return label


def _path_row(edit: QLineEdit, *buttons: QPushButton) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    for b in buttons:
        layout.addWidget(b)
    return row


class DataPage(QWizardPage):
    def __init__(self, n_layers: int):
        super().__init__()
        self.setTitle("Model and data")
        self.setSubTitle("Which model to read, at which hook point, over which documents.")
        self.teacher = QLineEdit("bundled")
        self.teacher.setToolTip(DataSpec.__dataclass_fields__["teacher"].metadata["help"])
        folder_btn, gguf_btn = QPushButton("Folder…"), QPushButton("GGUF…")
        folder_btn.clicked.connect(lambda: self._pick_dir(self.teacher, "Model folder"))
        gguf_btn.clicked.connect(lambda: self._pick_file(self.teacher, "GGUF file", "GGUF (*.gguf)"))
        bundled_btn = QPushButton("Bundled")
        bundled_btn.clicked.connect(lambda: self.teacher.setText("bundled"))
        self.corpus = QLineEdit("demo")
        self.corpus.setToolTip(DataSpec.__dataclass_fields__["corpus"].metadata["help"])
        demo_btn, file_btn, dir_btn = QPushButton("Demo"), QPushButton("File…"), QPushButton("Folder…")
        demo_btn.clicked.connect(lambda: self.corpus.setText("demo"))
        file_btn.clicked.connect(lambda: self._pick_file(self.corpus, "Documents",
                                                         "Text (*.txt *.md *.jsonl *.csv *.tsv)"))
        dir_btn.clicked.connect(lambda: self._pick_dir(self.corpus, "Folder of documents"))
        self.hook_kind = QComboBox()
        self.hook_kind.addItems(HOOK_KINDS)
        self.hook_kind.setToolTip("resid_post: the residual stream after the block; mlp_in: the "
                                  "block's MLP input (after its norm); mlp_out: the MLP's output.")
        self.layer = QSpinBox()
        self.layer.setRange(0, max(0, n_layers - 1))
        self.layer.setToolTip(f"Decoder block, 0 to {n_layers - 1}")
        hook_row = QWidget()
        hook_layout = QHBoxLayout(hook_row)
        hook_layout.setContentsMargins(0, 0, 0, 0)
        hook_layout.addWidget(self.hook_kind)
        hook_layout.addWidget(QLabel("after block"))
        hook_layout.addWidget(self.layer)
        hook_layout.addStretch(1)
        entries = [e for e in describe_spec()["data"] if e["name"] in DATA_FORM_FIELDS]
        self.form = ConfigForm(entries)
        self.error = _error_label()

        top = QFormLayout()
        top.addRow("Teacher", _path_row(self.teacher, bundled_btn, folder_btn, gguf_btn))
        top.addRow("Documents", _path_row(self.corpus, demo_btn, file_btn, dir_btn))
        top.addRow("Hook point", hook_row)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.form)
        layout.addStretch(1)
        layout.addWidget(self.error)

    def _pick_dir(self, edit: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title)
        if path:
            edit.setText(path)

    def _pick_file(self, edit: QLineEdit, title: str, filt: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, title, "", filt)
        if path:
            edit.setText(path)

    def set_spec(self, spec: JobSpec) -> None:
        self.teacher.setText(spec.data.teacher)
        self.corpus.setText(spec.data.corpus)
        hook = HookPoint.parse(spec.data.hook)
        self.hook_kind.setCurrentText(hook.kind)
        self.layer.setMaximum(max(self.layer.maximum(), hook.layer))
        self.layer.setValue(hook.layer)
        self.form.set_values({k: getattr(spec.data, k) for k in DATA_FORM_FIELDS})

    def fill(self, spec: JobSpec) -> None:
        values = self.form.values()
        spec.data = DataSpec(teacher=self.teacher.text().strip(), corpus=self.corpus.text().strip(),
                             hook=f"{self.hook_kind.currentText()}.{self.layer.value()}", **values)

    def validatePage(self) -> bool:
        return self.wizard().check(self, self.form)


class MethodPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle("Method")
        self.setSubTitle("A sparse autoencoder (SAE) learns a dictionary of feature directions "
                         "whose sparse combinations rebuild the activations; a student learns to "
                         "read documents as the teacher does.")
        self.group = QButtonGroup(self)
        layout = QVBoxLayout(self)
        students = QGroupBox("Distillation")
        inner = QVBoxLayout(students)
        button = QRadioButton("Student: a tiny model of the teacher's document vectors")
        button.setObjectName(STUDENT)
        summary = QLabel(STUDENT_SUMMARY)
        summary.setWordWrap(True)
        summary.setStyleSheet("color: #555; margin-left: 22px; margin-bottom: 8px;")
        self.group.addButton(button)
        inner.addWidget(button)
        inner.addWidget(summary)
        box = QGroupBox("Sparse autoencoder architecture")
        inner = QVBoxLayout(box)
        for name, cls in REGISTRY.items():
            if not cls.trainable:
                continue
            button = QRadioButton(cls.label or name)
            button.setObjectName(name)
            doc = (sys.modules[cls.__module__].__doc__ or "").strip()
            summary = QLabel(doc.split("\n\n")[0].replace("\n", " ") if doc else "")
            summary.setWordWrap(True)
            summary.setStyleSheet("color: #555; margin-left: 22px; margin-bottom: 8px;")
            self.group.addButton(button)
            inner.addWidget(button)
            inner.addWidget(summary)
        layout.addWidget(box)
        layout.addWidget(students)
        layout.addStretch(1)
        self.set_architecture("topk")

    def set_architecture(self, name: str) -> None:
        for button in self.group.buttons():
            button.setChecked(button.objectName() == name)

    def architecture(self) -> str:
        """The SAE architecture chosen, or STUDENT."""
        checked = self.group.checkedButton()
        return checked.objectName() if checked else "topk"

    def kind(self) -> str:
        return "student" if self.architecture() == STUDENT else "sae"


class SettingsPage(QWizardPage):
    """One generated form per section of the chosen kind of job (SAE or student)."""

    def __init__(self):
        super().__init__()
        self.setTitle("Settings")
        self.setSubTitle("Hover over a setting for what it does. Empty means automatic.")
        self.stack = QStackedWidget()
        self.kind_forms: dict[str, dict[str, ConfigForm]] = {}
        for kind, model_key, model_title in (("sae", "sae", "Dictionary"), ("student", "student", "Student")):
            sections = describe_spec(kind)
            entries = [e for e in sections[model_key] if e["name"] != "architecture"]
            forms = {model_key: ConfigForm(entries), "train": ConfigForm(sections["train"]),
                     "run": ConfigForm(sections["run"])}
            self.kind_forms[kind] = forms
            self.stack.addWidget(self._columns(forms, model_key, model_title))
        self.error = _error_label()
        layout = QVBoxLayout(self)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.error)
        self.set_spec(JobSpec.for_kind("student"))  # each kind's forms start at its defaults
        self.set_spec(JobSpec())

    @staticmethod
    def _columns(forms: dict[str, ConfigForm], model_key: str, model_title: str) -> QScrollArea:
        body = QWidget()
        columns = QHBoxLayout(body)
        left = QVBoxLayout()
        for title, key in ((model_title, model_key), ("Run", "run")):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(forms[key])
            left.addWidget(box)
        left.addStretch(1)
        columns.addLayout(left)
        box = QGroupBox("Training")
        QVBoxLayout(box).addWidget(forms["train"])
        right = QVBoxLayout()
        right.addWidget(box)
        right.addStretch(1)
        columns.addLayout(right)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        return scroll

    @property
    def forms(self) -> dict[str, ConfigForm]:
        """The forms of the kind of job the method page chose."""
        return self.kind_forms[self.kind]

    def show_kind(self, kind: str) -> None:
        self.kind = kind
        self.stack.setCurrentIndex(list(self.kind_forms).index(kind))

    def initializePage(self) -> None:
        self.show_kind(self.wizard().method_page.kind())

    def set_spec(self, spec: JobSpec) -> None:
        forms = self.kind_forms[spec.kind]
        if spec.kind == "student":
            forms["student"].set_values(spec.student.to_dict())
        else:
            forms["sae"].set_values(spec.sae_config(d_in=1).to_dict())
        forms["train"].set_values(spec.train.to_dict())
        forms["run"].set_values(spec.run.__dict__)
        self.show_kind(spec.kind)

    def fill(self, spec: JobSpec) -> None:
        forms = self.forms
        if self.kind == "student":
            from core.student.model import StudentConfig

            spec.student = StudentConfig(**forms["student"].values())
        else:
            sae = {k: v for k, v in forms["sae"].values().items() if k not in DERIVED_SAE_FIELDS}
            spec.sae = {**sae, "architecture": self.wizard().method_page.architecture()}
        spec.train = type(spec.train)(**forms["train"].values())  # JobSpec.for_kind made the right class
        spec.run = RunSpec(**forms["run"].values())

    def validatePage(self) -> bool:
        return self.wizard().check(self, *self.forms.values())


class CostPage(QWizardPage):
    def __init__(self):
        super().__init__()
        self.setTitle("Cost")
        self.setSubTitle("Measured on this device with a few real training steps before launch.")
        self.table = QTableWidget(0, 2)
        self.table.horizontalHeader().setVisible(False)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.remeasure = QPushButton("Measure again")
        self.remeasure.clicked.connect(self.measure)
        self.save = QPushButton("Save Spec as TOML…")
        self.save.clicked.connect(lambda: self.wizard().save_spec_dialog())
        buttons = QHBoxLayout()
        buttons.addWidget(self.remeasure)
        buttons.addWidget(self.save)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.estimate = None

    def initializePage(self) -> None:
        self.measure()

    def measure(self) -> None:
        wizard = self.wizard()
        spec = wizard.spec()
        teacher = wizard.teacher if wizard.teacher_matches(spec) else None
        self.table.setRowCount(0)
        self.status.setText("Measuring on this device…")
        self.remeasure.setEnabled(False)
        wizard.worker.submit(Task("estimate", lambda state: _estimate(spec, teacher, state),
                                  title="Estimating cost", on_result=self._show,
                                  on_error=self._failed))

    def _show(self, est) -> None:
        self.estimate = est
        rows = est.lines()
        self.table.setRowCount(len(rows))
        for i, (label, value) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(label))
            self.table.setItem(i, 1, QTableWidgetItem(value))
        self.status.setText(" ".join(est.notes) or "Launch starts the run; it appears in the Training tab.")
        self.remeasure.setEnabled(True)
        self.wizard().estimated.emit()

    def _failed(self, what: str, hint: str) -> None:
        self.status.setText(f"<span style='{ERROR_STYLE}'>{what}</span> {hint}")
        self.remeasure.setEnabled(True)
        self.wizard().estimated.emit()


def _estimate(spec, teacher, state):
    from core.jobs.estimate import estimate
    from core.jobs.sae_job import load_documents

    return estimate(spec, load_documents(spec.data.corpus), teacher, state=state)


class TrainingWizard(QWizard):
    """`spec()` is the job to launch once the wizard is accepted (Launch)."""

    estimated = Signal()

    def __init__(self, spec: Optional[JobSpec] = None, teacher=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("New Training Run")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Launch")
        self.teacher = teacher
        self.worker = TaskRunner(self)
        n_layers = teacher.n_layers if teacher is not None else 18
        self.data_page, self.method_page = DataPage(n_layers), MethodPage()
        self.settings_page, self.cost_page = SettingsPage(), CostPage()
        for page in (self.data_page, self.method_page, self.settings_page, self.cost_page):
            self.addPage(page)
        self.set_spec(spec or JobSpec())
        self.resize(860, 640)

    def set_spec(self, spec: JobSpec) -> None:
        self.data_page.set_spec(spec)
        self.method_page.set_architecture(STUDENT if spec.kind == "student"
                                          else spec.sae_config(d_in=1).validate().architecture)
        self.settings_page.set_spec(spec)

    def spec(self) -> JobSpec:
        """The spec as the pages say (may raise ValueError/SpecError naming a field)."""
        spec = JobSpec.for_kind(self.method_page.kind())
        self.data_page.fill(spec)
        self.settings_page.fill(spec)
        return spec.validate()

    def teacher_matches(self, spec: JobSpec) -> bool:
        """The app's loaded teacher can count tokens and be timed for this spec."""
        if self.teacher is None:
            return False
        return spec.data.teacher == self.teacher.source or (spec.data.teacher == "bundled"
                                                            and self.teacher.source == "bundled")

    def check(self, page: QWizardPage, *forms: ConfigForm) -> bool:
        """Validate what is filled in so far; show the first problem on the page."""
        for form in forms:
            form.mark_error(None)
        try:
            spec = JobSpec.for_kind(self.method_page.kind())
            self.data_page.fill(spec)
            if page is self.settings_page:
                self.settings_page.fill(spec)
            spec.validate()
        except (ValueError, TypeError, SpecError) as exc:
            message = exc.what if isinstance(exc, SpecError) else str(exc)
            page.error.setText(message)
            name = _field_named(message)
            for form in forms:
                if name in form.widgets:
                    form.mark_error(name)
            return False
        page.error.setText("")
        return True

    def save_spec_dialog(self, path: Optional[str] = None) -> Optional[str]:
        from core.paths import atomic_write_text

        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save Job Spec", "job.toml", "TOML (*.toml)")
        if not path:
            return None
        atomic_write_text(path, self.spec().to_toml())
        return path

    def done(self, result: int) -> None:
        self.worker.shutdown()
        super().done(result)
