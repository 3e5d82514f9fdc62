"""The feature bars of the Inspect tab: a document's top dictionary features as signed horizontal
bars with their labels, a switch between the ways of scoring, comparison with another document or
a labeled class, and export (PNG at 2x, CSV of every feature's score).

Plain data in, signals out: the panel knows nothing of torch, dictionaries or teachers. The
session (gui/feature_session.py) computes the scores and calls `show_scores`; the panel ranks,
draws, reports clicks and keys, and writes the exports.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QKeyEvent, QPainter, QPen
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QHBoxLayout,
                               QLabel, QLineEdit, QListWidget, QListWidgetItem, QMenu, QScrollArea,
                               QSizePolicy, QSpinBox, QToolButton, QToolTip, QVBoxLayout, QWidget)

from gui.style import Placeholder

# Scoring methods as the panel offers them: key, menu text, the one-line explanation in the view.
METHODS: dict[str, tuple[str, str]] = {
    "projection": ("Projection",
                   "Seed-000 bridge: the z-normalized mean-pooled document vector projected on the "
                   "unit decoder directions. Signed: negative = the document points away."),
    "tokens-mean": ("Tokens: mean",
                    "Every token encoded by the dictionary; the mean activation over the "
                    "document's tokens (BOS left out): how much of the document carries it."),
    "tokens-max": ("Tokens: max",
                   "Every token encoded by the dictionary; the largest activation on any one "
                   "token (BOS left out): whether it appears anywhere."),
}
DEFAULT_ROWS = 20

POSITIVE = QColor("#2c7bb6")  # a signed bar pointing the positive way
NEGATIVE = QColor("#d7301f")  # ... and the negative way
COMPARE_A = QColor("#0072B2")  # compare mode: the document (Okabe-Ito blue)
COMPARE_B = QColor("#E69F00")  # ... and what it is compared with (Okabe-Ito orange)
SELECTED_BG = QColor("#ffe8a3")
HOVER_BG = QColor("#edf3fb")
ZERO_LINE = QColor("#606060")
GRID = QColor("#e4e4e4")


@dataclass(frozen=True)
class BarRow:
    """One drawn row: a feature, its label, its score (and the compared score), its frequency."""

    feature: int
    label: str
    value: float
    other: Optional[float] = None
    frequency: Optional[float] = None
    auto: bool = False  # the label was made automatically (not edited by a person)


def rank(values: np.ndarray, other: Optional[np.ndarray] = None, by: str = "difference") -> np.ndarray:
    """Feature order: by |value|, largest first; when comparing, by |value - other| ("difference")
    or by the larger of |value| and |other| ("either": the top features of both sides). A stable
    sort of -key in float64 breaks ties by feature index, as core's FeatureScores.top does, so
    the GUI and the CLI list the same features."""
    values = np.asarray(values, dtype=np.float64)
    if other is None:
        key = np.abs(values)
    elif by == "either":
        key = np.maximum(np.abs(values), np.abs(np.asarray(other, dtype=np.float64)))
    else:
        key = np.abs(values - np.asarray(other, dtype=np.float64))
    return np.argsort(-key, kind="stable")


def format_value(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.01 or a == 0:
        return f"{v:.2f}"
    return f"{v:.1e}"


def format_frequency(freq: Optional[float]) -> str:
    if freq is None or not math.isfinite(freq):
        return "not known yet (the feature index is not built)"
    if freq == 0:
        return "never (dead on this corpus)"
    return f"{freq * 100:.3g}% of corpus tokens"


# ================================================================================== the chart


class BarChart(QWidget):
    """Custom-painted rows: feature id, label, a signed bar from the zero line, the value. In
    compare mode each row holds two thinner bars (the document above, the other below)."""

    clicked = Signal(int)  # feature of a clicked row
    activated = Signal(int)  # Enter on the selected row
    selection_moved = Signal(int)  # Up/Down moved the selection to this feature

    ROW_H = 24

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[BarRow] = []
        self.compare = False
        self.selected = -1  # feature
        self.hover_row = -1
        self.value_name = "score"
        self.names = ("document", "other")
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(300)

    # -- data ----------------------------------------------------------------------------------

    def set_rows(self, rows: list[BarRow], compare: bool) -> None:
        self.rows = list(rows)
        self.compare = compare
        self.hover_row = -1
        self.setFixedHeight(max(1, len(self.rows)) * self.ROW_H + 6)
        self.update()

    def set_selected(self, feature: int) -> None:
        if feature != self.selected:
            self.selected = feature
            self.update()

    def row_of(self, feature: int) -> int:
        for i, r in enumerate(self.rows):
            if r.feature == feature:
                return i
        return -1

    def row_rect(self, i: int) -> QRect:
        return QRect(0, 3 + i * self.ROW_H, self.width(), self.ROW_H)

    def sizeHint(self) -> QSize:
        return QSize(380, max(1, len(self.rows)) * self.ROW_H + 6)

    # -- painting -------------------------------------------------------------------------------

    def _layout(self, width: int, fm: QFontMetrics) -> tuple[int, int, int, int, int]:
        """(id column, label column, bar left, bar width, value column) in pixels."""
        id_w = fm.horizontalAdvance("f00000") + 6
        val_w = fm.horizontalAdvance("−00.00 / −00.00" if self.compare else "−000.00") + 8
        label_w = int(min(max(0.40 * width, 110), 270))
        bar_left = id_w + label_w + 6
        bar_w = max(40, width - bar_left - val_w - 6)
        return id_w, label_w, bar_left, bar_w, val_w

    def _scale(self) -> tuple[float, float]:
        vals = [r.value for r in self.rows] + [r.other for r in self.rows if r.other is not None]
        vals = [v for v in vals if math.isfinite(v)]
        lo, hi = min([0.0] + vals), max([0.0] + vals)
        if hi - lo < 1e-12:
            hi = lo + 1.0
        return lo, hi

    def paint_rows(self, painter: QPainter, width: int, hover: bool = True) -> None:
        fm = painter.fontMetrics()
        id_w, label_w, bar_left, bar_w, val_w = self._layout(width, fm)
        lo, hi = self._scale()
        zero_x = bar_left + bar_w * (-lo) / (hi - lo)

        def x_of(v: float) -> float:
            return bar_left + bar_w * (v - lo) / (hi - lo)

        bold = QFont(painter.font())
        bold.setBold(True)
        normal = QFont(painter.font())
        for i, row in enumerate(self.rows):
            rect = QRect(0, 3 + i * self.ROW_H, width, self.ROW_H)
            if row.feature == self.selected:
                painter.fillRect(rect, SELECTED_BG)
                painter.fillRect(QRect(rect.left(), rect.top(), 3, rect.height()), QColor("#c58a00"))
            elif hover and i == self.hover_row:
                painter.fillRect(rect, HOVER_BG)
            painter.setPen(QColor("#808080"))
            painter.setFont(normal)
            painter.drawText(QRect(6, rect.top(), id_w - 6, rect.height()),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, f"f{row.feature}")
            label = row.label or f"feature {row.feature}"
            painter.setPen(QColor("#202020") if row.label else QColor("#909090"))
            painter.setFont(bold if row.feature == self.selected else normal)
            shown = painter.fontMetrics().elidedText(label, Qt.TextElideMode.ElideRight, label_w - 4)
            painter.drawText(QRect(id_w, rect.top(), label_w - 2, rect.height()),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, shown)
            painter.setFont(normal)
            top, h = rect.top() + 4, rect.height() - 8
            if self.compare and row.other is not None:
                half = h / 2
                for j, (v, colour) in enumerate(((row.value, COMPARE_A), (row.other, COMPARE_B))):
                    x0, x1 = sorted((zero_x, x_of(v)))
                    painter.fillRect(QRectF(x0, top + j * half, max(x1 - x0, 1.0), half - 1), colour)
                text = f"{format_value(row.value)} / {format_value(row.other)}"
            else:
                x0, x1 = sorted((zero_x, x_of(row.value)))
                painter.fillRect(QRectF(x0, top, max(x1 - x0, 1.0), h), POSITIVE if row.value >= 0 else NEGATIVE)
                text = format_value(row.value)
            painter.setPen(QColor("#303030"))
            painter.drawText(QRect(bar_left + bar_w + 4, rect.top(), val_w, rect.height()),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)
        if self.rows:
            painter.setPen(QPen(ZERO_LINE, 1))
            painter.drawLine(round(zero_x), 3, round(zero_x), 3 + len(self.rows) * self.ROW_H)

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("white"))
        self.paint_rows(painter, self.width())
        if self.hasFocus() and self.selected < 0 and self.rows:
            painter.setPen(QPen(QColor("#9bb7d9"), 1, Qt.PenStyle.DotLine))
            painter.drawRect(self.row_rect(0).adjusted(1, 0, -2, -1))

    # -- interaction ----------------------------------------------------------------------------

    def _row_at(self, pos: QPoint) -> int:
        i = (pos.y() - 3) // self.ROW_H
        return i if 0 <= i < len(self.rows) and pos.y() >= 3 else -1

    def mouseMoveEvent(self, event) -> None:
        i = self._row_at(event.position().toPoint())
        if i != self.hover_row:
            self.hover_row = i
            self.setCursor(Qt.CursorShape.PointingHandCursor if i >= 0 else Qt.CursorShape.ArrowCursor)
            self.update()

    def leaveEvent(self, _event) -> None:
        self.hover_row = -1
        self.update()

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            i = self._row_at(event.position().toPoint())
            if i >= 0:
                self.setFocus()
                self.clicked.emit(self.rows[i].feature)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if not self.rows or key not in (Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_Return, Qt.Key.Key_Enter,
                                        Qt.Key.Key_Home, Qt.Key.Key_End):
            super().keyPressEvent(event)
            return
        i = self.row_of(self.selected)
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.activated.emit(self.rows[max(i, 0)].feature)
            return
        if key == Qt.Key.Key_Up:
            i = max(i - 1, 0) if i >= 0 else len(self.rows) - 1
        elif key == Qt.Key.Key_Down:
            i = min(i + 1, len(self.rows) - 1) if i >= 0 else 0
        elif key == Qt.Key.Key_Home:
            i = 0
        else:
            i = len(self.rows) - 1
        self.selection_moved.emit(self.rows[i].feature)

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            i = self._row_at(event.pos())
            if i >= 0:
                QToolTip.showText(event.globalPos(), self.tooltip(self.rows[i]), self, self.row_rect(i))
            else:
                QToolTip.hideText()
            return True
        return super().event(event)

    def tooltip(self, row: BarRow) -> str:
        label = row.label or "(no label)"
        kind = "automatic label" if row.auto else "label"
        lines = [f"Feature {row.feature}: {label}" + (f"  ({kind})" if row.label else "")]
        if self.compare and row.other is not None:
            lines.append(f"{self.value_name}: {format_value(row.value)} in {self.names[0]}, "
                         f"{format_value(row.other)} in {self.names[1]} "
                         f"(difference {format_value(row.value - row.other)})")
        else:
            lines.append(f"{self.value_name}: {row.value:.4g}")
        lines.append(f"Fires on: {format_frequency(row.frequency)}")
        lines.append("Click or Enter: open its dashboard · Up/Down: select")
        return "\n".join(lines)


# ================================================================================== picking a document


class DocumentPicker(QDialog):
    """Choose a document to compare with: a filter box over (id, label, snippet) rows."""

    def __init__(self, documents: Sequence[tuple[str, str, str]], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Compare with a document")
        self.resize(560, 460)
        self.documents = list(documents)
        self.filter = QLineEdit(placeholderText="Filter by id, label or text")
        self.filter.setClearButtonEnabled(True)
        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        for i, (doc_id, label, text) in enumerate(self.documents):
            item = QListWidgetItem(f"{doc_id}  ·  {label}  ·  {text}" if label else f"{doc_id}  ·  {text}")
            item.setData(Qt.ItemDataRole.UserRole, i)
            item.setToolTip(text)
            self.list.addItem(item)
        self.filter.textChanged.connect(self._filter)
        self.list.itemDoubleClicked.connect(lambda _item: self.accept())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.filter)
        layout.addWidget(self.list, 1)
        layout.addWidget(buttons)
        if self.list.count():
            self.list.setCurrentRow(0)

    def _filter(self, text: str) -> None:
        needle = text.casefold()
        first = None
        for r in range(self.list.count()):
            item = self.list.item(r)
            hide = bool(needle) and needle not in " ".join(self.documents[r]).casefold()
            item.setHidden(hide)
            if not hide and first is None:
                first = item
        if first is not None:
            self.list.setCurrentItem(first)

    def chosen(self) -> Optional[int]:
        item = self.list.currentItem()
        return None if item is None or item.isHidden() else int(item.data(Qt.ItemDataRole.UserRole))


# ================================================================================== the panel


class FeatureBarsPanel(QWidget):
    """Header, dictionary line, method and compare controls, explanation, bars, export."""

    feature_selected = Signal(int)  # a row was clicked or the selection moved (-1: cleared)
    feature_activated = Signal(int)  # click or Enter: open the feature's dashboard
    method_changed = Signal(str)  # a key of METHODS
    compare_changed = Signal(str, str)  # ("none", ""), ("document", index as text), ("class", label)
    export_requested = Signal(str)  # "png" or "csv": the window asks for a path

    def __init__(self, parent=None):
        super().__init__(parent)
        self.values: Optional[np.ndarray] = None
        self.other: Optional[np.ndarray] = None
        self.order: Optional[np.ndarray] = None
        self.labels: Callable[[int], str] = lambda f: ""
        self.is_auto: Callable[[int], bool] = lambda f: False
        self.frequency: Optional[np.ndarray] = None
        self.title = ""
        self.note_text = ""
        self.documents: list[tuple[str, str, str]] = []  # compare choices: (id, label, snippet)
        self.compare = ("none", "")

        self.header = QLabel("Features")
        self.header.setStyleSheet("font-weight: 600; font-size: 11pt;")
        self.header.setTextFormat(Qt.TextFormat.PlainText)
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.dictionary_label = QLabel("No dictionary")
        self.dictionary_label.setStyleSheet("color: #505050;")
        self.dictionary_label.setTextFormat(Qt.TextFormat.PlainText)
        self.dictionary_label.setWordWrap(True)

        self.method_box = QComboBox()
        for key, (text, tip) in METHODS.items():
            self.method_box.addItem(text, key)
            self.method_box.setItemData(self.method_box.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.method_box.setToolTip("How the document's features are scored")
        self.method_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method_box.setMinimumContentsLength(10)
        self.method_box.currentIndexChanged.connect(self._method_changed)
        self.compare_box = QComboBox()
        self.compare_box.setToolTip("Compare the document's scores with another document or with "
                                    "the mean of a labeled class of the corpus")
        self.compare_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.compare_box.setMinimumContentsLength(10)
        self.compare_box.activated.connect(self._compare_chosen)
        self.rows_spin = QSpinBox()
        self.rows_spin.setRange(5, 50)
        self.rows_spin.setValue(DEFAULT_ROWS)
        self.rows_spin.setToolTip("Number of features shown")
        self.rows_spin.valueChanged.connect(lambda _v: self._relayout())
        self.export_button = QToolButton(text="Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_button)
        self.act_png = menu.addAction("Bars as PNG…", lambda: self.export_requested.emit("png"))
        self.act_csv = menu.addAction("Scores as CSV…", lambda: self.export_requested.emit("csv"))
        self.export_button.setMenu(menu)
        self.set_compare_choices([], [])

        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(self.method_box, 2)
        controls.addWidget(QLabel("vs"))
        controls.addWidget(self.compare_box, 2)
        controls.addWidget(self.rows_spin)
        controls.addWidget(self.export_button)

        self.explanation = QLabel()
        self.explanation.setWordWrap(True)
        self.explanation.setStyleSheet("color: #505050; font-size: 9pt;")
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.PlainText)
        self.note.setStyleSheet("color: #707070; font-size: 9pt;")
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        self.legend.hide()

        self.chart = BarChart()
        self.chart.clicked.connect(self._row_clicked)
        self.chart.activated.connect(self.feature_activated.emit)
        self.chart.selection_moved.connect(self._moved)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(self.chart)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setStyleSheet("QScrollArea { background: white; border: 1px solid #d0d0d0; }")
        self.stack = Placeholder(self.scroll, "No dictionary is loaded.")

        self.selection_label = QLabel()
        self.selection_label.setTextFormat(Qt.TextFormat.PlainText)
        self.selection_label.setStyleSheet("color: #8c2d04;")
        self.selection_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.clear_button = QToolButton(text="Clear")
        self.clear_button.setToolTip("Stop highlighting the feature; colour the tokens by residual norm again")
        self.clear_button.clicked.connect(lambda: self.feature_selected.emit(-1))
        selection = QHBoxLayout()
        selection.setContentsMargins(0, 0, 0, 0)
        selection.addWidget(self.selection_label, 1)
        selection.addWidget(self.clear_button)
        self.selection_row = QWidget()
        self.selection_row.setLayout(selection)
        self.selection_row.hide()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.header)
        layout.addWidget(self.dictionary_label)
        layout.addLayout(controls)
        layout.addWidget(self.explanation)
        layout.addWidget(self.legend)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.note)
        layout.addWidget(self.selection_row)
        self._method_changed()

    # ------------------------------------------------------------------ API

    @property
    def method(self) -> str:
        return self.method_box.currentData()

    def set_method(self, method: str) -> None:
        i = self.method_box.findData(method)
        if i < 0:
            raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        self.method_box.setCurrentIndex(i)

    @property
    def n_rows(self) -> int:
        return self.rows_spin.value()

    @property
    def rows(self) -> list[BarRow]:
        return self.chart.rows

    @property
    def selected_feature(self) -> int:
        return self.chart.selected

    def set_dictionary_info(self, text: str) -> None:
        self.dictionary_label.setText(text)

    def set_compare_choices(self, classes: Sequence[tuple[str, int]],
                            documents: Sequence[tuple[str, str, str]], student: str = "") -> None:
        """Classes as (label, number of documents); documents as (id, label, snippet), by index;
        `student`: the loaded student's name ("" for none)."""
        self.documents = list(documents)
        box = self.compare_box
        box.blockSignals(True)
        box.clear()
        box.addItem("no comparison", "none:")
        box.addItem("a document…", "pick:")
        box.setItemData(1, "Choose a document of the open corpus", Qt.ItemDataRole.ToolTipRole)
        if student:
            box.addItem(f"student ({student})", "student:")
            box.setItemData(box.count() - 1, "The same document read by the distilled student: its predicted "
                            "document vector projected on the same dictionary", Qt.ItemDataRole.ToolTipRole)
        for label, n in classes:
            box.addItem(f"class {label} ({n:,})", f"class:{label}")
            box.setItemData(box.count() - 1, f"The mean of the {n:,} documents labelled {label!r}",
                            Qt.ItemDataRole.ToolTipRole)
        kind, value = self.compare
        keep = (kind == "class" and box.findData(f"class:{value}") >= 0) or \
               (kind == "document" and value.isdigit() and int(value) < len(self.documents)) or \
               (kind == "student" and bool(student))
        if keep and kind == "document":
            self._add_document_item(int(value))
        elif keep:
            box.setCurrentIndex(box.findData(f"{kind}:{value}"))
        else:
            self.compare = ("none", "")
            box.setCurrentIndex(0)
        box.blockSignals(False)

    def set_compare(self, kind: str, value: str = "") -> None:
        """Choose the comparison programmatically (as the combo box does)."""
        box = self.compare_box
        if kind == "document":
            self._add_document_item(int(value))
        elif kind in ("class", "student"):
            i = box.findData(f"{kind}:{value}")
            if i < 0:
                raise ValueError(f"no {kind} {value!r} in the compare choices")
            box.setCurrentIndex(i)
        else:
            box.setCurrentIndex(0)
        self.compare = (kind, value)
        self.compare_changed.emit(kind, value)

    def show_message(self, message: str, header: str = "Features") -> None:
        self.values = self.other = self.order = None
        self.chart.set_rows([], False)
        self.header.setText(header)
        self.note.setText("")
        self.legend.hide()
        self.stack.show_message(message)

    def show_scores(self, header: str, values: Sequence[float], labels: Callable[[int], str],
                    is_auto: Callable[[int], bool] = lambda f: False,
                    frequency: Optional[Sequence[float]] = None, note: str = "",
                    other: Optional[Sequence[float]] = None, names: tuple[str, str] = ("document", "other"),
                    value_name: str = "score", rank_by: str = "difference") -> None:
        """Scores of every feature ([d_sae]); the panel ranks them and shows the top rows. With
        `other`, both are drawn (names[0] vs names[1]) and rows are ranked by `rank_by` (see rank)."""
        self.values = np.asarray(values, dtype=np.float64)
        self.other = None if other is None else np.asarray(other, dtype=np.float64)
        self.labels, self.is_auto = labels, is_auto
        self.frequency = None if frequency is None else np.asarray(frequency, dtype=np.float64)
        self.order = rank(self.values, self.other, rank_by)
        self.title = header
        self.note_text = note
        self.chart.value_name = value_name
        self.chart.names = names
        self.header.setText(header)
        self.note.setText(note)
        if self.other is not None:
            self.legend.setText(
                f'<span style="color:{COMPARE_A.name()}">■</span> {_esc(names[0])} &nbsp;&nbsp; '
                f'<span style="color:{COMPARE_B.name()}">■</span> {_esc(names[1])} &nbsp;&nbsp; '
                '<span style="color:#707070">sorted by the ' +
                ('larger of the two' if rank_by == "either" else 'largest difference') + '</span>')
            self.legend.show()
        else:
            self.legend.hide()
        self._relayout()
        self.stack.show_content()

    def refresh_labels(self) -> None:
        """Labels or frequencies changed (edited, or the index was built): redraw the rows."""
        if self.values is not None:
            self._relayout()

    def set_frequency(self, frequency: Optional[Sequence[float]]) -> None:
        self.frequency = None if frequency is None else np.asarray(frequency, dtype=np.float64)
        self.refresh_labels()

    def select_feature(self, feature: int, label: str = "") -> None:
        """Highlight `feature` (its row, if shown) and say which feature colours the tokens."""
        self.chart.set_selected(feature)
        if feature >= 0:
            self.selection_label.setText(f"Tokens coloured by feature {feature}" + (f": {label}" if label else ""))
            self.selection_row.show()
            i = self.chart.row_of(feature)
            if i >= 0:
                r = self.chart.row_rect(i)
                self.scroll.ensureVisible(r.center().x(), r.center().y(), 0, self.chart.ROW_H)
        else:
            self.selection_row.hide()

    # ------------------------------------------------------------------ export

    def render_image(self, scale: float = 2.0, width: int = 640) -> QImage:
        """The bars as a figure, every shown row (not only the scrolled part), with the title,
        the explanation and the note, at `scale` x resolution."""
        font = self.chart.font()
        fm = QFontMetrics(font)
        pad = 12
        text_w = width - 2 * pad
        head = [(self.title, True), (self.dictionary_label.text(), False),
                (METHODS[self.method][1], False)]
        if self.other is not None:
            head.append(("legend", False))  # painted by _paint_legend
        foot = [(self.note_text, False)] if self.note_text else []

        def height_of(lines) -> int:
            return sum(fm.boundingRect(QRect(0, 0, text_w, 10_000), Qt.TextFlag.TextWordWrap, t).height() + 4
                       for t, _ in lines if t)

        chart_h = len(self.chart.rows) * self.chart.ROW_H + 6
        h = pad + height_of(head) + 6 + chart_h + 6 + height_of(foot) + pad
        image = QImage(int(width * scale), int(h * scale), QImage.Format.Format_ARGB32)
        image.setDevicePixelRatio(scale)
        image.fill(QColor("white"))
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        painter.setFont(font)
        y = pad
        for i, (text, bold) in enumerate(head):
            if not text:
                continue
            f = QFont(font)
            f.setBold(bold)
            painter.setFont(f)
            if self.other is not None and i == len(head) - 1:
                y = self._paint_legend(painter, pad, y, text_w)
                continue
            r = painter.boundingRect(QRect(pad, y, text_w, 10_000), Qt.TextFlag.TextWordWrap, text)
            painter.setPen(QColor("#202020") if bold else QColor("#505050"))
            painter.drawText(r, Qt.TextFlag.TextWordWrap, text)
            y += r.height() + 4
        painter.setFont(font)
        painter.translate(pad, y + 6)
        self.chart.paint_rows(painter, text_w, hover=False)
        painter.translate(-pad, -(y + 6))
        y += 6 + chart_h + 6
        for text, _ in foot:
            r = painter.boundingRect(QRect(pad, y, text_w, 10_000), Qt.TextFlag.TextWordWrap, text)
            painter.setPen(QColor("#707070"))
            painter.drawText(r, Qt.TextFlag.TextWordWrap, text)
            y += r.height() + 4
        painter.end()
        return image

    def _paint_legend(self, painter: QPainter, x: int, y: int, width: int) -> int:
        fm = painter.fontMetrics()
        h = fm.height()
        for colour, name in ((COMPARE_A, self.chart.names[0]), (COMPARE_B, self.chart.names[1])):
            painter.fillRect(QRect(x, y + 3, h - 6, h - 6), colour)
            x += h
            painter.setPen(QColor("#303030"))
            painter.drawText(QPoint(x, y + fm.ascent()), name)
            x += fm.horizontalAdvance(name) + 18
        painter.setPen(QColor("#707070"))
        painter.drawText(QPoint(x, y + fm.ascent()), "sorted by the largest difference")
        return y + h + 4

    def export_png(self, path: str | Path, scale: float = 2.0) -> Path:
        if not self.chart.rows:
            raise ValueError("There are no feature bars to export.")
        path = Path(path)
        if not self.render_image(scale).save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        return path

    def write_csv(self, path: str | Path) -> Path:
        """Every feature's score, in the shown order: rank, feature, label, label kind, the
        score(s) of the current method, and the firing frequency on the corpus (empty if unknown)."""
        if self.values is None:
            raise ValueError("There are no feature scores to export.")
        path = Path(path)
        method = self.method.replace("-", "_")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            header = ["rank", "feature", "label", "label_kind"]
            header += [method] if self.other is None else [f"{method}_a", f"{method}_b", "difference"]
            writer.writerow(header + ["frequency"])
            for r, feature in enumerate(self.order, start=1):
                feature = int(feature)
                label = self.labels(feature)
                kind = ("auto" if self.is_auto(feature) else "edited") if label else ""
                cells = [r, feature, label, kind, repr(float(self.values[feature]))]
                if self.other is not None:
                    a, b = float(self.values[feature]), float(self.other[feature])
                    cells += [repr(b), repr(a - b)]
                freq = "" if self.frequency is None else repr(float(self.frequency[feature]))
                writer.writerow(cells + [freq])
        return path

    # ------------------------------------------------------------------ internals

    def _relayout(self) -> None:
        if self.values is None or self.order is None:
            return
        rows = []
        for f in self.order[: self.n_rows]:
            f = int(f)
            rows.append(BarRow(f, self.labels(f), float(self.values[f]),
                               None if self.other is None else float(self.other[f]),
                               None if self.frequency is None else float(self.frequency[f]),
                               self.is_auto(f)))
        self.chart.set_rows(rows, self.other is not None)

    def _method_changed(self, _index: int = 0) -> None:
        self.explanation.setText(METHODS[self.method][1])
        self.method_changed.emit(self.method)

    def _row_clicked(self, feature: int) -> None:
        self.feature_selected.emit(feature)
        self.feature_activated.emit(feature)

    def _moved(self, feature: int) -> None:
        self.feature_selected.emit(feature)

    def _compare_chosen(self, index: int) -> None:
        kind, _, value = self.compare_box.itemData(index).partition(":")
        if kind == "pick":
            self.pick_document()
            return
        self.compare = (kind, value)
        self.compare_changed.emit(kind, value)

    def pick_document(self) -> DocumentPicker:
        """Open the (window-modal, non-blocking) document picker; OK compares with its choice."""
        picker = DocumentPicker(self.documents, self)
        picker.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def done(result: int) -> None:
            chosen = picker.chosen()
            if result == QDialog.DialogCode.Accepted and chosen is not None:
                self.set_compare("document", str(chosen))
            else:
                self._restore_compare_item()

        picker.finished.connect(done)
        picker.open()
        self.picker = picker
        return picker

    def _restore_compare_item(self) -> None:
        kind, value = self.compare
        box = self.compare_box
        box.setCurrentIndex(max(0, box.findData(f"{kind}:{value}")))

    def _add_document_item(self, index: int) -> None:
        box = self.compare_box
        for i in reversed(range(box.count())):
            if box.itemData(i).startswith("document:"):
                box.removeItem(i)
        doc_id = self.documents[index][0] if 0 <= index < len(self.documents) else f"#{index}"
        box.insertItem(2, f"document: {doc_id}", f"document:{index}")
        box.setCurrentIndex(2)


def _esc(text: str) -> str:
    import html

    return html.escape(text)
