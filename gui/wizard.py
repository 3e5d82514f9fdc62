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
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMenu, QPushButton,
                               QRadioButton, QScrollArea, QSpinBox, QStackedWidget, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget, QWizard, QWizardPage)

from core.dictionaries.base import REGISTRY
from core.documents import DEMO_SETS
from core.jobs.spec import (DERIVED_SAE_FIELDS, DataSpec, JobSpec, PairSpec, RunSpec, SpecError,
                            VariantConfig, describe_spec)
from core.models import HookPoint
from gui.config_form import ConfigForm
from gui.worker import Task, TaskRunner

ERROR_STYLE = "color: #b00020;"
HOOK_KINDS = ("resid_post", "mlp_in", "mlp_out")
DATA_FORM_FIELDS = ("max_length", "source", "batch_tokens", "device", "precision")
STUDENT = "student"  # the method page's name for the student-distillation job
STUDENT_SUMMARY = ("A tiny transformer over the teacher's tokenizer learns to predict the teacher's "
                   "z-normalized mean-pooled residual at the chosen layer (seed 000): document vectors, "
                   "feature bars and contrast scores like the teacher's, 19x faster than the bundled "
                   "teacher on a CPU (about 1,000x fewer FLOPs than a 4B teacher). Reads resid_post hooks.")
VARIANT, CROSSCODER = "variant", "crosscoder"  # the method page's names for the pair jobs
PAIR_KINDS = (STUDENT, VARIANT, CROSSCODER)  # methods that are job kinds of their own
VARIANT_SUMMARY = ("Fine-tunes a copy of the teacher on the documents, training only the chosen "
                   "decoder blocks (the rest frozen), and saves it as a model folder: the variant "
                   "half of a pair for a crosscoder. The demo variant (examples/variant-demo.toml: "
                   "blocks 3-6 of the bundled teacher on Python docstrings, 150 steps) took 13 minutes "
                   "on a busy 2-core CPU at one thread (9.4 minutes of CPU time); the cost page "
                   "measures this device. The hook point is not used. With the setting text = "
                   "'generated' it trains instead on text another model (the generator) writes after "
                   "each document's opening words: sequence-level distillation; the cost page times "
                   "that generation too.")
CROSSCODER_SUMMARY = ("One dictionary of latents shared by two models that share a tokenizer (the "
                      "teacher as the base, and its variant), with an encoder and a decoder per model "
                      "(seed 003): latents whose decoder lives in one model only are what the variant "
                      "gained or lost. Reads both models at the hook point into one paired cache.")


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
        self.demo_menu = QMenu(demo_btn)  # every bundled demo set, by name
        for name, (_, title) in DEMO_SETS.items():
            self.demo_menu.addAction(f"{name}: {title}", lambda n=name: self.corpus.setText(n))
        demo_btn.setMenu(self.demo_menu)
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

    def follow_defaults(self, old: DataSpec, new: DataSpec) -> None:
        """Another method was chosen: what still holds the old method's default takes the new
        one's (a student starts on the large demo corpus in bfloat16); what the user set stays."""
        if self.corpus.text().strip() == old.corpus:
            self.corpus.setText(new.corpus)
        values = self.form.values()
        self.form.set_values({k: getattr(new, k) for k in DATA_FORM_FIELDS
                              if values.get(k) == getattr(old, k)})

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
        pairs = QGroupBox("Model pairs (base against variant)")
        inner = QVBoxLayout(pairs)
        for name, title, text in ((VARIANT, "Variant (fine-tune a sibling of the teacher)", VARIANT_SUMMARY),
                                  (CROSSCODER, "Crosscoder (base vs variant)", CROSSCODER_SUMMARY)):
            button = QRadioButton(title)
            button.setObjectName(name)
            summary = QLabel(text)
            summary.setWordWrap(True)
            summary.setStyleSheet("color: #555; margin-left: 22px; margin-bottom: 8px;")
            self.group.addButton(button)
            inner.addWidget(button)
            inner.addWidget(summary)
        layout.addWidget(box)
        layout.addWidget(students)
        layout.addWidget(pairs)
        layout.addStretch(1)
        self.set_architecture("topk")

    def set_architecture(self, name: str) -> None:
        for button in self.group.buttons():
            button.setChecked(button.objectName() == name)

    def architecture(self) -> str:
        """The SAE architecture chosen, or STUDENT, VARIANT or CROSSCODER."""
        checked = self.group.checkedButton()
        return checked.objectName() if checked else "topk"

    def kind(self) -> str:
        method = self.architecture()
        return method if method in PAIR_KINDS else "sae"


class SettingsPage(QWizardPage):
    """One generated form per section of the chosen kind of job (SAE, student, variant or
    crosscoder)."""

    # kind -> its model sections (key, group title), shown above [run]; [train] on the right
    SECTIONS = {"sae": (("sae", "Dictionary"),), "student": (("student", "Student"),),
                VARIANT: ((VARIANT, "Variant"),),
                CROSSCODER: (("pair", "Pair (the base model is the teacher of the first page)"),
                             (CROSSCODER, "Crosscoder"))}
    HIDDEN = {"sae": ("architecture",), "pair": ("base",)}  # chosen on other pages

    def __init__(self):
        super().__init__()
        self.setTitle("Settings")
        self.setSubTitle("Hover over a setting for what it does. Empty means automatic.")
        self.stack = QStackedWidget()
        self.kind_forms: dict[str, dict[str, ConfigForm]] = {}
        self.error = _error_label()
        for kind, sections in self.SECTIONS.items():
            described = describe_spec(kind)
            forms = {key: ConfigForm([e for e in described[key] if e["name"] not in self.HIDDEN.get(key, ())])
                     for key, _title in sections}
            forms.update(train=ConfigForm(described["train"]), run=ConfigForm(described["run"]))
            self.kind_forms[kind] = forms
            self.stack.addWidget(self._columns(forms, sections))
        layout = QVBoxLayout(self)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.error)
        for kind in (CROSSCODER, VARIANT, STUDENT):  # each kind's forms start at its defaults
            self.set_spec(JobSpec.for_kind(kind))
        self.set_spec(JobSpec())

    def _columns(self, forms: dict[str, ConfigForm], sections) -> QScrollArea:
        body = QWidget()
        columns = QHBoxLayout(body)
        left = QVBoxLayout()
        for key, title in (*sections, ("run", "Run")):
            box = QGroupBox(title)
            inner = QVBoxLayout(box)
            inner.addWidget(forms[key])
            if key == "pair":
                inner.addWidget(self._variant_buttons(forms[key]))
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

    def _variant_buttons(self, form: ConfigForm) -> QWidget:
        edit = form.widgets["variant"]
        folder = QPushButton("Variant folder…")
        folder.setToolTip("A Hugging Face model folder sharing the base model's tokenizer "
                          "(a variant run writes one to its artifacts/variant).")
        folder.clicked.connect(lambda: self._pick_variant(edit))
        latest = QPushButton("Latest variant run")
        latest.setToolTip("The model of the newest finished variant run.")
        latest.clicked.connect(lambda: self.use_latest_variant(edit))
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(folder)
        layout.addWidget(latest)
        layout.addStretch(1)
        return row

    def _pick_variant(self, edit: QLineEdit) -> None:
        path = QFileDialog.getExistingDirectory(self, "Variant model folder")
        if path:
            edit.setText(path)

    def use_latest_variant(self, edit: Optional[QLineEdit] = None) -> Optional[str]:
        """Fill [pair] variant with the model folder of the newest finished variant run."""
        from core.jobs.runs import list_runs

        edit = edit or self.kind_forms[CROSSCODER]["pair"].widgets["variant"]
        for run in list_runs():
            folder = run.artifacts_dir / "variant"
            if (folder / "config.json").is_file() and run.status().get("state") == "done":
                edit.setText(str(folder))
                self.error.setText("")
                return str(folder)
        self.error.setText("No variant run has finished yet: launch one with the method "
                           "'Variant (fine-tune a sibling of the teacher)' first.")
        return None

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
        elif spec.kind == VARIANT:
            forms[VARIANT].set_values(spec.variant.to_dict())
        elif spec.kind == CROSSCODER:
            forms["pair"].set_values(spec.pair.__dict__)
            forms[CROSSCODER].set_values(spec.crosscoder)
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
        elif self.kind == VARIANT:
            spec.variant = VariantConfig(**forms[VARIANT].values())
        elif self.kind == CROSSCODER:
            pair = {k: (v.strip() if isinstance(v, str) else v) for k, v in forms["pair"].values().items()}
            spec.pair = PairSpec(base=spec.data.teacher, **pair)
            spec.crosscoder = dict(forms[CROSSCODER].values())
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
        layout.addWidget(self.table)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        layout.addStretch(1)  # the notes sit under the table, never squeezed by it
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
        self.table.setFixedHeight(self.table.verticalHeader().length() + 2 * self.table.frameWidth())
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
        self.method_page.group.buttonToggled.connect(self._method_toggled)
        self.resize(860, 640)

    def _method_toggled(self, _button, checked: bool) -> None:
        kind = self.method_page.kind()
        if checked and kind != self._kind:
            self.data_page.follow_defaults(JobSpec.for_kind(self._kind).data, JobSpec.for_kind(kind).data)
            self._kind = kind

    def set_spec(self, spec: JobSpec) -> None:
        self._kind = spec.kind  # the spec's own data settings stay as they are
        self.data_page.set_spec(spec)
        self.method_page.set_architecture(spec.kind if spec.kind in PAIR_KINDS
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
            else:  # the later pages' settings are checked on theirs
                try:
                    spec.data.validate()
                except ValueError as exc:
                    raise SpecError(f"[data] {exc}", "Correct the setting and try again.")
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
