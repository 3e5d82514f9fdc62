"""The Contrast tab: a contrast vector between classes of the open corpus (seed 000), its held-out
ROC curve and per-class score histograms, the dictionary features it is made of, and a box that
classifies pasted text with it.

Plain data in, signals out: the view knows nothing of torch. The controller
(gui/contrast_session.py) computes on worker threads and calls `show_result`, `show_classified`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QPlainTextEdit, QPushButton, QScrollArea, QSplitter, QVBoxLayout, QWidget)

from gui.feature_bars import BarChart, BarRow, rank
from gui.style import Placeholder

CLASS_COLOURS = ("#D55E00", "#0072B2")  # positive, negative (Okabe-Ito: vermillion, blue)
N_BARS = 20


@dataclass
class ContrastResult:
    """What the view draws for one contrast vector (all plain numbers)."""

    name: str
    positive: str
    negative: str  # a label, or "rest"
    space: str  # e.g. "teacher resid_post.6" or "student <folder>"
    auc: float  # held-out
    train_auc: float
    fpr: Sequence[float]
    tpr: Sequence[float]
    scores: dict[str, Sequence[float]]  # held-out scores per side: {positive: [...], negative: [...]}
    threshold: float
    n_train: tuple[int, int]  # documents per side used to build the vector
    n_held: tuple[int, int]
    features: Optional[np.ndarray] = None  # projection of the vector on the dictionary [d_sae]
    feature_labels: Callable[[int], str] = field(default=lambda f: "")
    features_note: str = ""
    saved_to: str = ""


def roc_plot(title: str) -> pg.PlotWidget:
    """An empty ROC plot: unit axes, labelled, the chance diagonal dashed."""
    plot = pg.PlotWidget(background="w", title=title)
    plot.setLabel("bottom", "false positive rate")
    plot.setLabel("left", "true positive rate")
    plot.setXRange(0, 1, padding=0.02)
    plot.setYRange(0, 1, padding=0.02)
    plot.setMouseEnabled(False, False)
    plot.plot([0, 1], [0, 1], pen=pg.mkPen("#b0b0b0", style=Qt.PenStyle.DashLine))
    return plot


class ContrastView(QWidget):
    compute_requested = Signal(str, str, str, str)  # space, positive, negative ("rest" or label), name
    save_requested = Signal()
    classify_requested = Signal(str)  # the pasted text
    feature_activated = Signal(int)  # a bar clicked: open the feature's dashboard
    export_requested = Signal()
    head_requested = Signal()  # fine-tune the student with a classification head

    def __init__(self, parent=None):
        super().__init__(parent)
        self.result: Optional[ContrastResult] = None
        self.space = QComboBox()
        self.space.setToolTip("Whose document vectors the contrast is computed on: the teacher's "
                              "z-normalized mean-pooled residuals, or a distilled student's prediction of them.")
        self.positive = QComboBox()
        self.positive.setToolTip("The class of interest: its documents' mean minus the other side's.")
        self.negative = QComboBox()
        self.negative.setToolTip("The other side: one class, or every other document (the rest).")
        self.name = QLineEdit()
        self.name.setPlaceholderText("name (default: class vs other)")
        self.compute_button = QPushButton("Compute")
        self.compute_button.setToolTip("Build the vector on the training split and score the held-out "
                                       "documents (Ctrl+Return)")
        self.compute_button.clicked.connect(self._compute)
        self.save_button = QPushButton("Save")
        self.save_button.setToolTip("Keep this contrast vector (named) for classifying, and later for steering")
        self.save_button.clicked.connect(self.save_requested)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("The ROC curve and scores as CSV, and a PNG of this tab")
        self.export_button.clicked.connect(self.export_requested)
        self.head_button = QPushButton("Fine-tune head")
        self.head_button.setToolTip("Supervised, for comparison: fine-tune a copy of the student with a "
                                    "linear classification head on the same training split, and draw its "
                                    "held-out ROC beside the contrast's (student vectors only)")
        self.head_button.clicked.connect(self.head_requested)
        for b in (self.save_button, self.export_button, self.head_button):
            b.setEnabled(False)
        controls = QHBoxLayout()
        for text, widget in (("Vectors:", self.space), ("Class:", self.positive), ("against", self.negative)):
            controls.addWidget(QLabel(text))
            controls.addWidget(widget)
        controls.addWidget(self.name, 1)
        controls.addWidget(self.compute_button)
        controls.addWidget(self.save_button)
        controls.addWidget(self.head_button)
        controls.addWidget(self.export_button)

        self.summary = QLabel("Open a labeled corpus, pick a class and press Compute.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # Plots: items made once, then only setData (pyqtgraph advice).
        self.roc = roc_plot("ROC on held-out documents")
        self.roc_legend = self.roc.addLegend(offset=(-10, -10))
        self.roc_curve = self.roc.plot([], [], pen=pg.mkPen("#0072B2", width=2))
        self.head_curve = self.roc.plot([], [], pen=pg.mkPen("#E69F00", width=2))
        self.head_note = ""
        self.hist = pg.PlotWidget(background="w", title="Held-out scores per class")
        self.hist.setLabel("bottom", "score (dot product with the contrast vector)")
        self.hist.setLabel("left", "documents")
        self.hist_items = [pg.PlotDataItem([], [], stepMode="center", fillLevel=0, pen=pg.mkPen(c, width=1.5),
                                           brush=pg.mkBrush(pg.mkColor(c).red(), pg.mkColor(c).green(),
                                                            pg.mkColor(c).blue(), 70))
                           for c in CLASS_COLOURS]
        self.legend = self.hist.addLegend(offset=(-10, 10))
        for item in self.hist_items:
            self.hist.addItem(item)
        self.threshold_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#404040", style=Qt.PenStyle.DotLine))
        self.threshold_line.hide()
        self.hist.addItem(self.threshold_line)
        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(self.roc)
        plots.addWidget(self.hist)
        plots.setMinimumHeight(250)  # the bars below would otherwise squeeze the plots flat

        bars_box = QGroupBox("Dictionary features of the contrast vector")
        self.bars_note = QLabel("")
        self.bars_note.setWordWrap(True)
        self.bars_note.setStyleSheet("color: #606060;")
        self.chart = BarChart()
        self.chart.value_name = "projection"
        self.chart.clicked.connect(self.feature_activated)
        self.chart.activated.connect(self.feature_activated)
        self.bars_stack = Placeholder(self.chart, "Compute a contrast to see its features.")
        bars_layout = QVBoxLayout(bars_box)
        bars_layout.addWidget(self.bars_note)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.bars_stack)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        bars_layout.addWidget(scroll, 1)

        classify_box = QGroupBox("Classify a text")
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("Paste a text here and press Classify (Ctrl+Return)")
        self.classify_button = QPushButton("Classify")
        self.classify_button.setEnabled(False)
        self.classify_button.clicked.connect(self._classify)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setTextFormat(Qt.TextFormat.RichText)
        form = QFormLayout()
        form.addRow(self.classify_button, self.verdict)
        classify_layout = QVBoxLayout(classify_box)
        classify_layout.addWidget(self.text, 1)
        classify_layout.addLayout(form)

        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(bars_box)
        lower.addWidget(classify_box)
        lower.setSizes([600, 400])
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(plots)
        body.addWidget(lower)
        body.setSizes([330, 400])
        body.setStretchFactor(0, 1)
        body.setStretchFactor(1, 1)
        body.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.summary)
        layout.addWidget(body, 1)
        for keys, slot in (("Ctrl+Return", self._enter), ("Ctrl+Enter", self._enter)):
            QShortcut(QKeySequence(keys), self, activated=slot)

    # ------------------------------------------------------------------ inputs

    def set_choices(self, spaces: Sequence[tuple[str, str]], classes: Sequence[tuple[str, int]]) -> None:
        """spaces: (key, text); classes: (label, documents). Keeps the current picks if still there."""
        def refill(combo: QComboBox, items: Sequence[tuple[str, str]], default: int = 0) -> None:
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            for key, text in items:
                combo.addItem(text, key)
            i = combo.findData(current)
            combo.setCurrentIndex(i if i >= 0 else min(default, combo.count() - 1))
            combo.blockSignals(False)

        refill(self.space, spaces)
        labels = [(label, f"{label} ({n:,})") for label, n in classes]
        refill(self.positive, labels)
        refill(self.negative, [("rest", "the rest")] + labels)
        ready = bool(spaces) and len(classes) >= 2
        self.compute_button.setEnabled(ready)
        if not ready:
            self.summary.setText("A contrast needs a corpus with at least two labels and the teacher loaded "
                                 "(File > Open Demo Corpus, or Provenance Demo Set for human vs machine text).")

    def _compute(self) -> None:
        if self.compute_button.isEnabled():
            self.compute_requested.emit(self.space.currentData() or "", self.positive.currentData() or "",
                                        self.negative.currentData() or "rest", self.name.text().strip())

    def _classify(self) -> None:
        text = self.text.toPlainText()
        if not text.strip():
            self.verdict.setText("Paste or type a text first.")
            return
        self.classify_requested.emit(text)

    def _enter(self) -> None:
        if self.text.hasFocus():
            if self.classify_button.isEnabled():
                self._classify()
        else:
            self._compute()

    # ------------------------------------------------------------------ results

    def show_busy(self, message: str) -> None:
        self.summary.setText(message)

    def show_error(self, message: str) -> None:
        self.summary.setText(f'<span style="color:#b00020">{message}</span>')

    def show_result(self, r: ContrastResult) -> None:
        self.result = r
        other = "the rest" if r.negative == "rest" else r.negative
        self.summary.setText(
            f"<b>{r.name}</b> on {r.space}: held-out AUC <b>{r.auc:.3f}</b> "
            f"({r.n_held[0]:,} {r.positive} vs {r.n_held[1]:,} {other}); training AUC {r.train_auc:.3f} "
            f"(built from {r.n_train[0]:,} vs {r.n_train[1]:,} documents). Threshold {r.threshold:.3g} "
            "(chosen on the training split)." + (f" Saved to {r.saved_to}." if r.saved_to else ""))
        self.roc_curve.setData(list(r.fpr), list(r.tpr))
        self.roc_legend.clear()
        self.roc_legend.addItem(self.roc_curve, f"contrast vector: {r.auc:.3f}")
        if self.head_note:
            self.roc_legend.addItem(self.head_curve, self.head_note)
        self.roc.setTitle(f"ROC on held-out documents · AUC {r.auc:.3f}")
        self.legend.clear()
        values = [np.asarray(r.scores.get(k, []), dtype=float) for k in (r.positive, r.negative)]
        both = np.concatenate(values) if any(len(v) for v in values) else np.zeros(1)
        edges = np.histogram_bin_edges(both, bins=30)
        for item, v, name in zip(self.hist_items, values, (r.positive, other)):
            counts, _ = np.histogram(v, bins=edges)
            item.setData(edges, counts)
            self.legend.addItem(item, f"{name} ({len(v):,})")
        self.threshold_line.setValue(r.threshold)
        self.threshold_line.show()
        self._show_features(r)
        self.save_button.setEnabled(not r.saved_to)
        self.export_button.setEnabled(True)
        self.classify_button.setEnabled(True)

    def clear_head(self, available: bool) -> None:
        """Forget the fine-tuned head's curve (a new contrast); offer it when a student is used."""
        self.head_note = ""
        self.head_curve.setData([], [])
        self.head_button.setEnabled(available)

    def show_head(self, auc: float, fpr: Sequence[float], tpr: Sequence[float], steps: int) -> None:
        self.head_note = f"fine-tuned head: {auc:.3f}"
        self.head_curve.setData(list(fpr), list(tpr))
        if self.result is not None:
            self.show_result(self.result)
        self.summary.setText(self.summary.text() + f" Fine-tuned student with a classification head "
                             f"({steps} steps on the training split): held-out AUC <b>{auc:.3f}</b>.")

    def _show_features(self, r: ContrastResult) -> None:
        self.bars_note.setText(r.features_note)
        if r.features is None:
            self.bars_stack.show_message(r.features_note or "Open a dictionary to see the features.")
            return
        order = rank(r.features)[:N_BARS]
        self.chart.set_rows([BarRow(int(f), r.feature_labels(int(f)), float(r.features[f])) for f in order], False)
        self.bars_stack.show_content()

    def mark_saved(self, path: str) -> None:
        if self.result is not None:
            self.result.saved_to = path
            self.show_result(self.result)

    def show_classified(self, score: float, label: str, threshold: float, note: str = "") -> None:
        colour = CLASS_COLOURS[0] if self.result is not None and label == self.result.positive else CLASS_COLOURS[1]
        self.verdict.setText(f'<b style="color:{colour}">{label}</b> · score {score:.3g} '
                             f"(threshold {threshold:.3g})" + (f"<br><small>{note}</small>" if note else ""))

    # ------------------------------------------------------------------ export

    def write_csv(self, path: str | Path) -> Path:
        """The ROC points and every held-out score, in one file with a `kind` column."""
        r, path = self.result, Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["kind", "class", "x", "y"])
            for x, y in zip(r.fpr, r.tpr):
                w.writerow(["roc", "", f"{x:.6g}", f"{y:.6g}"])
            for name, values in r.scores.items():
                for v in values:
                    w.writerow(["score", name, f"{float(v):.6g}", ""])
        return path
