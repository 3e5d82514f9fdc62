"""The Steering tab (issue 6, seed 003): a prompt, one slider per direction added to the residual
stream, and the continuations streamed side by side: unsteered beside steered, the base model
above its variant.

Plain widgets in, signals out: the view knows nothing of torch or core. The controller
(gui/steering_session.py) resolves directions, runs generation on worker threads and feeds the
panes piece by piece.
"""

from __future__ import annotations

from typing import Optional, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QKeySequence, QShortcut, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QFrame, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QMenu, QPlainTextEdit, QPushButton, QScrollArea, QSlider,
                               QSpinBox, QSplitter, QTabWidget, QToolButton, QVBoxLayout, QWidget)

# The strengths a slider spans: core.steering.SLIDER_RANGE (not imported here: core.steering imports
# torch, which the GUI thread never loads itself). tests/test_steering_view.py checks they agree.
SLIDER_RANGE = (-1.0, 1.0)
SLIDER_STEPS = 100  # slider ticks per unit of strength: 0.01
BOX_RANGE = (-10.0, 10.0)  # the numeric box reaches past the slider, to see a model break
DEFAULT_PROMPT = "The best thing about my weekend was"
MODELS = ("base", "variant")
KINDS = ("unsteered", "steered")
APPLY_TEXT = {"both": "both models", "base": "base only", "variant": "variant only"}
ERROR_COLOUR = "#b00020"
DEPARTED_COLOUR = "#c0440a"  # steered text from where it departs from the unsteered continuation


class DirectionRow(QFrame):
    """One direction: its name, a slider and a numeric box kept in step, whom it steers, remove."""

    alpha_changed = Signal(int, float)  # uid, strength
    apply_changed = Signal(int, str)  # uid, "both" / "base" / "variant"
    remove_requested = Signal(int)

    def __init__(self, uid: int, name: str, detail: str, tooltip: str, alpha: float = 0.0,
                 apply_to: str = "both", parent=None):
        super().__init__(parent)
        self.uid = uid
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.name = QLabel(f"<b>{_escape(name)}</b>")
        self.name.setWordWrap(True)
        self.name.setMinimumWidth(40)
        self.name.setToolTip(tooltip)
        self.name.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail = QLabel(detail)
        self.detail.setStyleSheet("color: #606060;")
        self.detail.setToolTip(tooltip)
        self.apply = QComboBox()
        for key, text in APPLY_TEXT.items():
            self.apply.addItem(text, key)
        self.apply.setCurrentIndex(max(0, self.apply.findData(apply_to)))
        self.apply.setToolTip("Which model this direction steers when a variant is loaded. 'variant only' "
                              "keeps the base's steered continuation equal to its unsteered one.")
        self.apply.currentIndexChanged.connect(lambda _i: self.apply_changed.emit(self.uid, self.apply_to))
        self.remove = QToolButton()
        self.remove.setText("✕")
        self.remove.setToolTip("Remove this direction")
        self.remove.setAutoRaise(True)
        self.remove.clicked.connect(lambda: self.remove_requested.emit(self.uid))
        lo, hi = SLIDER_RANGE
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(round(lo * SLIDER_STEPS), round(hi * SLIDER_STEPS))
        self.slider.setPageStep(10)
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setTickInterval(SLIDER_STEPS // 4)
        self.slider.setToolTip(f"Strength, in units of the typical (centred) residual norm at the layer: "
                               f"{lo:g} to {hi:g} here; type larger values in the box")
        self.box = QDoubleSpinBox()
        self.box.setRange(*BOX_RANGE)
        self.box.setDecimals(2)
        self.box.setSingleStep(0.05)
        self.box.setKeyboardTracking(False)  # typing "0.35" does not regenerate at "0" and "0.3"
        self.box.setToolTip(self.slider.toolTip())
        self.slider.valueChanged.connect(self._slid)
        self.box.valueChanged.connect(self._typed)
        top = QHBoxLayout()
        top.addWidget(self.name, 1)
        top.addWidget(self.remove, 0, Qt.AlignmentFlag.AlignTop)
        middle = QHBoxLayout()
        middle.addWidget(self.slider, 1)
        middle.addWidget(self.box)
        bottom = QHBoxLayout()
        bottom.addWidget(self.detail, 1)
        bottom.addWidget(self.apply)  # shown while a variant is loaded
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addLayout(middle)
        layout.addLayout(bottom)
        self.set_alpha(alpha)

    @property
    def alpha(self) -> float:
        return float(self.box.value())

    @property
    def apply_to(self) -> str:
        return self.apply.currentData()

    def set_alpha(self, alpha: float, emit: bool = False) -> None:
        for w in (self.slider, self.box):
            w.blockSignals(True)
        self.box.setValue(alpha)
        self.slider.setValue(self._tick(self.box.value()))
        for w in (self.slider, self.box):
            w.blockSignals(False)
        if emit:
            self.alpha_changed.emit(self.uid, self.alpha)

    def set_apply_to(self, apply_to: str) -> None:
        self.apply.setCurrentIndex(max(0, self.apply.findData(apply_to)))

    def set_variant_present(self, present: bool) -> None:
        self.apply.setVisible(present)

    def set_tooltip(self, tooltip: str) -> None:
        for w in (self.name, self.detail):
            w.setToolTip(tooltip)

    def _tick(self, alpha: float) -> int:
        return max(self.slider.minimum(), min(self.slider.maximum(), round(alpha * SLIDER_STEPS)))

    def _slid(self, tick: int) -> None:
        self.box.blockSignals(True)
        self.box.setValue(tick / SLIDER_STEPS)
        self.box.blockSignals(False)
        self.alpha_changed.emit(self.uid, self.alpha)

    def _typed(self, value: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(self._tick(value))
        self.slider.blockSignals(False)
        self.alpha_changed.emit(self.uid, self.alpha)


class StreamPane(QFrame):
    """A read-only continuation: the prompt in grey, then the generated text as it streams in."""

    def __init__(self, title: str, parent=None):
        super().__init__(parent)
        self.title = QLabel(title)
        self.title.setStyleSheet("font-weight: 600;")
        self.subtitle = QLabel("")  # the strengths a steered pane was generated with
        self.subtitle.setStyleSheet("color: #606060;")
        self.subtitle.setMinimumWidth(40)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.status = QLabel("")
        self.status.setStyleSheet("color: #606060;")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.status)
        self.continuation = ""  # the generated text shown (the prompt left out)
        self.count = 0  # pieces shown
        self.prompt_length = 0
        self.departed: Optional[int] = None  # where the coloured part of the continuation begins
        self.stream = None  # what the controller bound this pane to
        self.note = ""  # the controller's remark shown before the status

    def reset(self, prompt: str = "", message: str = "") -> None:
        """Empty the pane: the prompt in grey (or a grey message), nothing generated yet."""
        self.text.clear()
        self.continuation, self.count = "", 0
        grey = QTextCharFormat()
        grey.setForeground(QColor("#808080"))
        cursor = self.text.textCursor()
        cursor.insertText(prompt or message, grey)
        self.prompt_length = len(prompt)
        self.departed = None
        self.status.setText("")

    def append(self, pieces: Sequence[str]) -> None:
        if not pieces:
            return
        text = "".join(pieces)
        cursor = self.text.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text, QTextCharFormat())
        self.continuation += text
        self.count += len(pieces)
        if self.departed is not None:
            self.mark_departure(self.departed, force=True)
        bar = self.text.verticalScrollBar()
        bar.setValue(bar.maximum())

    def mark_departure(self, at: Optional[int], force: bool = False) -> None:
        """Colour the continuation from character `at` on (where a steered text departs from the
        unsteered one); None: no colour."""
        if at == self.departed and not force:
            return
        self.departed = at
        cursor = self.text.textCursor()
        cursor.setPosition(self.prompt_length)
        cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        cursor.setCharFormat(QTextCharFormat())
        if at is None or at >= len(self.continuation):
            return
        fmt = QTextCharFormat()
        fmt.setForeground(QColor(DEPARTED_COLOUR))
        cursor.setPosition(self.prompt_length + at)
        cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        cursor.setCharFormat(fmt)

    def set_subtitle(self, text: str) -> None:
        self.subtitle.setToolTip(text)
        metrics = self.subtitle.fontMetrics()
        self.subtitle.setText(metrics.elidedText(text, Qt.TextElideMode.ElideRight, max(200, self.width() - 8)))

    def set_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet(f"color: {ERROR_COLOUR if error else '#606060'};")
        self.status.setText(text)


class SteeringView(QWidget):
    generate_requested = Signal()
    cancel_requested = Signal()
    add_direction_requested = Signal(str)  # "feature", "contrast", "crosscoder", "file"
    alpha_changed = Signal(int, float)
    apply_changed = Signal(int, str)
    remove_requested = Signal(int)
    variant_requested = Signal()  # pick a variant folder
    variant_cleared = Signal()
    save_preset_requested = Signal()
    load_preset_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: dict[int, DirectionRow] = {}

        # -- prompt and generation settings
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Type a prompt; Ctrl+Return generates")
        self.prompt.setPlainText(DEFAULT_PROMPT)
        self.prompt.setFixedHeight(self.prompt.fontMetrics().lineSpacing() * 3 + 14)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate the continuations (Ctrl+Return); moving a slider "
                                        "regenerates the steered ones by itself")
        self.generate_button.setDefault(True)
        self.generate_button.clicked.connect(self.generate_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop generating (Esc)")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 1024)
        self.max_tokens.setValue(40)
        self.max_tokens.setToolTip("New tokens per continuation")
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        self.temperature.setSpecialValueText("greedy")
        self.temperature.setToolTip("0 = greedy (steered and unsteered comparable token by token); "
                                    "above 0 samples, seeded, the same seed for every continuation")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Seed of the sampling (used when the temperature is above 0)")
        self.seed.setEnabled(False)
        self.temperature.valueChanged.connect(lambda t: self.seed.setEnabled(t > 0))
        self.variant_button = QPushButton("Variant model…")
        self.variant_button.setToolTip("A variant of the base (a Hugging Face folder, e.g. a fine-tuning "
                                       "job's artifacts): its continuations go below the base's")
        self.variant_button.clicked.connect(self.variant_requested)
        self.variant_clear = QToolButton()
        self.variant_clear.setText("✕")
        self.variant_clear.setToolTip("Close the variant")
        self.variant_clear.setAutoRaise(True)
        self.variant_clear.clicked.connect(self.variant_cleared)
        self.variant_clear.hide()
        self.variant_label = QLabel("no variant")
        self.variant_label.setStyleSheet("color: #606060;")
        self.save_preset = QPushButton("Save preset…")
        self.save_preset.setToolTip("The prompt, models, directions and strengths as a JSON file")
        self.save_preset.clicked.connect(self.save_preset_requested)
        self.load_preset = QPushButton("Load preset…")
        self.load_preset.clicked.connect(self.load_preset_requested)

        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        prompt_row.addLayout(buttons)
        settings = QHBoxLayout()
        for text, widget in (("Max new tokens:", self.max_tokens), ("Temperature:", self.temperature),
                             ("Seed:", self.seed)):
            settings.addWidget(QLabel(text))
            settings.addWidget(widget)
        settings.addSpacing(16)
        settings.addWidget(self.variant_button)
        settings.addWidget(self.variant_label)
        settings.addWidget(self.variant_clear)
        settings.addStretch(1)
        settings.addWidget(self.save_preset)
        settings.addWidget(self.load_preset)

        # -- directions
        self.add_button = QToolButton()
        self.add_button.setText("Add direction…")
        self.add_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.add_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.add_menu = QMenu(self.add_button)
        self.add_actions = {}
        for kind, text in (("feature", "Dictionary feature…"), ("contrast", "Saved contrast…"),
                           ("crosscoder", "Crosscoder latent…"), ("file", "Vector file…")):
            action = self.add_menu.addAction(text)
            action.triggered.connect(lambda _c=False, k=kind: self.add_direction_requested.emit(k))
            self.add_actions[kind] = action
        self.add_button.setMenu(self.add_menu)
        self.rows_box = QWidget()
        self.rows_layout = QVBoxLayout(self.rows_box)
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.setSpacing(4)
        self.empty = QLabel("No direction yet. Add a dictionary feature, a saved contrast, a crosscoder "
                            "latent or a vector file, then drag its slider.")
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: #808080; padding: 8px;")
        self.rows_layout.addWidget(self.empty)
        self.rows_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # rows fit the width
        scroll.setWidget(self.rows_box)
        self.scale_note = QLabel("Strength 1 adds a vector as long as a token's residual typically lies "
                                 "from the mean residual at that layer (its centred norm; BOS is left out "
                                 "and never steered). Steered text is "
                                 f"<span style='color:{DEPARTED_COLOUR}'>coloured</span> from where it "
                                 "departs from the unsteered text.")
        self.scale_note.setWordWrap(True)
        self.scale_note.setStyleSheet("color: #606060;")
        directions = QGroupBox("Directions")
        d_layout = QVBoxLayout(directions)
        head = QHBoxLayout()
        head.addWidget(self.add_button)
        head.addStretch(1)
        d_layout.addLayout(head)
        d_layout.addWidget(scroll, 1)
        d_layout.addWidget(self.scale_note)

        # -- the continuations: unsteered | steered, base above variant
        self.panes: dict[tuple[str, str], StreamPane] = {}
        grid_box = QWidget()
        grid = QGridLayout(grid_box)
        grid.setContentsMargins(0, 0, 0, 0)
        for r, model in enumerate(MODELS):
            for c, kind in enumerate(KINDS):
                pane = StreamPane(f"{model.capitalize()} · {kind}")
                self.panes[(model, kind)] = pane
                grid.addWidget(pane, r, c)
        self.set_variant("")

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(directions)
        split.addWidget(grid_box)
        split.setSizes([400, 880])
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.addLayout(prompt_row)
        layout.addLayout(settings)
        layout.addWidget(split, 1)
        layout.addWidget(self.status)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, activated=self.generate_requested.emit)

    # ------------------------------------------------------------------ inputs

    def settings(self) -> tuple[str, int, float, int]:
        """(prompt, max new tokens, temperature, seed)."""
        return (self.prompt.toPlainText(), self.max_tokens.value(), float(self.temperature.value()),
                self.seed.value())

    def set_settings(self, prompt: str, max_new_tokens: int, temperature: float, seed: int) -> None:
        self.prompt.setPlainText(prompt)
        self.max_tokens.setValue(max_new_tokens)
        self.temperature.setValue(temperature)
        self.seed.setValue(seed)

    # ------------------------------------------------------------------ directions

    def add_row(self, uid: int, name: str, detail: str, tooltip: str, alpha: float = 0.0,
                apply_to: str = "both") -> DirectionRow:
        row = DirectionRow(uid, name, detail, tooltip, alpha, apply_to)
        row.alpha_changed.connect(self.alpha_changed)
        row.apply_changed.connect(self.apply_changed)
        row.remove_requested.connect(self.remove_requested)
        row.set_variant_present(self.variant_present)
        self.rows[uid] = row
        position = sorted(self.rows).index(uid) + 1  # after the 'no direction yet' label, by uid
        self.rows_layout.insertWidget(position, row)
        self.empty.hide()
        return row

    def remove_row(self, uid: int) -> None:
        row = self.rows.pop(uid, None)
        if row is not None:
            self.rows_layout.removeWidget(row)
            row.deleteLater()
        self.empty.setVisible(not self.rows)

    # ------------------------------------------------------------------ models and panes

    @property
    def variant_present(self) -> bool:
        return self.panes[("variant", "unsteered")].isVisibleTo(self)

    def set_base(self, name: str) -> None:
        for kind in KINDS:
            self.panes[("base", kind)].title.setText(f"Base · {kind}" + (f" — {name}" if name else ""))

    def set_variant(self, name: str, loading: bool = False) -> None:
        """Show the variant's row of panes (name) or hide it ("")."""
        for kind in KINDS:
            pane = self.panes[("variant", kind)]
            pane.title.setText(f"Variant · {kind}" + (f" — {name}" if name else ""))
            pane.setVisible(bool(name))
        self.variant_label.setText(f"loading {name}…" if loading else (name or "no variant"))
        self.variant_clear.setVisible(bool(name))
        for row in self.rows.values():
            row.set_variant_present(bool(name))

    def set_busy(self, busy: bool) -> None:
        self.cancel_button.setEnabled(busy)

    def show_status(self, text: str) -> None:
        self.status.setStyleSheet("")
        self.status.setText(text)

    def show_error(self, text: str) -> None:
        self.status.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.status.setText(text)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ==================================================================================== add a direction


class AddDirectionDialog(QDialog):
    """Where a new direction comes from: a dictionary feature (by index or label), a saved contrast,
    a crosscoder latent's decoder row, or a vector file. `chosen` carries the source as plain data
    (core.steering.direction_from_source reads it)."""

    chosen = Signal(dict)
    starter_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Add a steering direction")
        self.resize(560, 460)
        self.tabs = QTabWidget()
        self._dictionary = ""
        self._labels = None
        self._n_features = 0

        # dictionary feature
        page = QWidget()
        self.dictionary_label = QLabel("")
        self.dictionary_label.setWordWrap(True)
        self.starter_button = QPushButton("Use the starter dictionary")
        self.starter_button.clicked.connect(self.starter_requested)
        self.starter_button.hide()
        self.search = QLineEdit()
        self.search.setPlaceholderText("search the labels, e.g. food, computer, death")
        self.search.textChanged.connect(self._search)
        self.results = QListWidget()
        self.results.currentItemChanged.connect(self._picked)
        self.results.itemDoubleClicked.connect(lambda _i: self._accept())
        self.feature_index = QSpinBox()
        self.feature_index.setRange(0, 0)
        form = QFormLayout()
        form.addRow("Feature:", self.feature_index)
        lay = QVBoxLayout(page)
        lay.addWidget(self.dictionary_label)
        lay.addWidget(self.starter_button)
        lay.addWidget(self.search)
        lay.addWidget(self.results, 1)
        lay.addLayout(form)
        self.tabs.addTab(page, "Dictionary feature")

        # saved contrast
        page = QWidget()
        self.contrasts = QListWidget()
        self.contrasts.itemDoubleClicked.connect(lambda _i: self._accept())
        self.contrast_note = QLabel("")
        self.contrast_note.setWordWrap(True)
        self.contrast_note.setStyleSheet("color: #606060;")
        other = QPushButton("Other contrast file…")
        other.clicked.connect(self._other_contrast)
        lay = QVBoxLayout(page)
        lay.addWidget(self.contrasts, 1)
        lay.addWidget(self.contrast_note)
        lay.addWidget(other, 0, Qt.AlignmentFlag.AlignLeft)
        self.tabs.addTab(page, "Saved contrast")

        # crosscoder latent
        page = QWidget()
        self.crosscoder = QLineEdit()
        self.crosscoder.setPlaceholderText("a crosscoder folder (cfg.json + crosscoder_weights.safetensors)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(lambda: self._browse_folder(self.crosscoder, "Crosscoder folder"))
        where = QHBoxLayout()
        where.addWidget(self.crosscoder, 1)
        where.addWidget(browse)
        self.latent = QSpinBox()
        self.latent.setRange(0, 10_000_000)
        self.decoder = QComboBox()
        self.decoder.addItem("variant's decoder row", 1)
        self.decoder.addItem("base's decoder row", 0)
        self.decoder.setToolTip("Each latent has one decoder row per model: what it adds to that model's "
                                "residual, in that model's units")
        form = QFormLayout()
        form.addRow("Folder:", where)
        form.addRow("Latent:", self.latent)
        form.addRow("Direction:", self.decoder)
        lay = QVBoxLayout(page)
        lay.addLayout(form)
        note = QLabel("A variant-only latent (relative decoder norm near 1) steered on the variant shows what "
                      "the variant has that the base lacks.")
        note.setWordWrap(True)
        note.setStyleSheet("color: #606060;")
        lay.addWidget(note)
        lay.addStretch(1)
        self.tabs.addTab(page, "Crosscoder latent")

        # vector file
        page = QWidget()
        self.vector_path = QLineEdit()
        self.vector_path.setPlaceholderText("a .safetensors file holding one vector")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_vector)
        where = QHBoxLayout()
        where.addWidget(self.vector_path, 1)
        where.addWidget(browse)
        self.vector_hook = QLineEdit()
        self.vector_hook.setPlaceholderText("resid_post.6, if the file does not say")
        form = QFormLayout()
        form.addRow("File:", where)
        form.addRow("Hook:", self.vector_hook)
        lay = QVBoxLayout(page)
        lay.addLayout(form)
        lay.addStretch(1)
        self.tabs.addTab(page, "Vector file")

        self.message = QLabel("")
        self.message.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Add")
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.message)
        layout.addWidget(self.buttons)

    KIND_PAGES = ("feature", "contrast", "crosscoder", "file")

    def show_page(self, kind: str) -> None:
        self.tabs.setCurrentIndex(self.KIND_PAGES.index(kind))

    def set_dictionary(self, folder: str, description: str, n_features: int, labels=None,
                       offer_starter: bool = False) -> None:
        """The dictionary features come from ("" for none: then say why in `description`)."""
        self._dictionary, self._labels, self._n_features = folder, labels, n_features
        self.dictionary_label.setText(description)
        self.starter_button.setVisible(offer_starter)
        self.feature_index.setRange(0, max(0, n_features - 1))
        for w in (self.search, self.results, self.feature_index):
            w.setEnabled(bool(folder))
        self._search(self.search.text())

    def set_contrasts(self, items: Sequence[tuple[str, str]], folder: str) -> None:
        """(name, path) of the saved contrasts."""
        self.contrasts.clear()
        for name, path in items:
            item = QListWidgetItem(name)
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setToolTip(path)
            self.contrasts.addItem(item)
        if items:
            self.contrasts.setCurrentRow(0)
        self.contrast_note.setText(f"Contrasts saved from the Contrast tab, in {folder}." if items else
                                   f"No saved contrast yet in {folder}: build one in the Contrast tab and "
                                   "press Save, or pick a contrast file.")

    def _search(self, text: str) -> None:
        self.results.clear()
        labels, needle = self._labels, text.casefold().strip()
        if labels is None or not self._dictionary:
            return
        shown = 0
        for f in range(self._n_features):
            label = labels.get(f) if hasattr(labels, "get") else ""
            if needle and needle not in (label or "").casefold() and needle != str(f):
                continue
            if not needle and not label:
                continue
            item = QListWidgetItem(f"#{f}  {label}" if label else f"#{f}")
            item.setData(Qt.ItemDataRole.UserRole, f)
            self.results.addItem(item)
            shown += 1
            if shown >= 500:
                break
        if self.results.count():
            self.results.setCurrentRow(0)  # the index follows the best match

    def _picked(self, item: Optional[QListWidgetItem], _previous=None) -> None:
        if item is not None:
            self.feature_index.setValue(int(item.data(Qt.ItemDataRole.UserRole)))

    def _browse_folder(self, edit: QLineEdit, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, title, edit.text())
        if folder:
            edit.setText(folder)

    def _browse_vector(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Vector file", self.vector_path.text(),
                                              "safetensors (*.safetensors);;All files (*)")
        if path:
            self.vector_path.setText(path)

    def _other_contrast(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Contrast file", "", "Contrast (*.contrast.safetensors)")
        if path:
            item = QListWidgetItem(path.rsplit("/", 1)[-1].removesuffix(".contrast.safetensors"))
            item.setData(Qt.ItemDataRole.UserRole, path)
            self.contrasts.addItem(item)
            self.contrasts.setCurrentItem(item)

    def source(self) -> tuple[Optional[dict], str]:
        """(the source the current page describes, or None and why not)."""
        kind = self.KIND_PAGES[self.tabs.currentIndex()]
        if kind == "feature":
            if not self._dictionary:
                return None, "No dictionary is open."
            return {"kind": "feature", "dictionary": self._dictionary, "index": self.feature_index.value()}, ""
        if kind == "contrast":
            item = self.contrasts.currentItem()
            if item is None:
                return None, "Pick a saved contrast."
            return {"kind": "contrast", "path": item.data(Qt.ItemDataRole.UserRole)}, ""
        if kind == "crosscoder":
            folder = self.crosscoder.text().strip()
            if not folder:
                return None, "Choose a crosscoder folder."
            return {"kind": "crosscoder", "folder": folder, "latent": self.latent.value(),
                    "decoder": self.decoder.currentData()}, ""
        path = self.vector_path.text().strip()
        if not path:
            return None, "Choose a vector file."
        source = {"kind": "file", "path": path}
        if self.vector_hook.text().strip():
            source["hook"] = self.vector_hook.text().strip()
        return source, ""

    def _accept(self) -> None:
        source, why = self.source()
        if source is None:
            self.message.setText(why)
            return
        self.message.setText("")
        self.chosen.emit(source)
        self.accept()
