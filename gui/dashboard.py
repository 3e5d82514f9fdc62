"""A feature dashboard: everything about one dictionary feature on one screen.

Label (editable; automatic or edited), firing frequency and largest activation, a histogram of
its activations on the corpus, its top-activating contexts with the activating tokens coloured,
its logit effects (the tokens its decoder direction promotes and suppresses through the final
norm and the unembedding) and its nearest features by decoder cosine (click to follow).

One dashboard that follows the selected feature, in a dock: at 1280x800 there is no room for
several, and a dashboard that tracks the bars (Up/Down) and keeps a Back/Forward history
answers "what is this one, and that one?" without a pile of windows. The dock can float.

Plain data in (`DashboardData`, built on a worker from the feature index; see
gui/feature_session.py), signals out.
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMenu,
                               QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QTextBrowser,
                               QToolButton, QVBoxLayout, QWidget)

from gui.feature_bars import format_value
from gui.style import FEATURE_SCALE_STOPS, Placeholder, scale_colour, text_colour_on, titled_split
from gui.token_view import display_text

N_CONTEXTS = 20


def contexts_split(panel: QWidget, upper: QWidget, sizes: list[int]) -> QSplitter:
    """A dashboard's body: `upper` above the top-activating contexts (a title and a QTextBrowser
    in a Placeholder), in a vertical splitter. Sets panel.contexts_title, .contexts and
    .contexts_stack, which the dashboards fill."""
    panel.contexts_title = QLabel("Top-activating contexts")
    panel.contexts_title.setStyleSheet("font-weight: 600;")
    panel.contexts = QTextBrowser()
    panel.contexts.setOpenLinks(False)
    panel.contexts.setStyleSheet("QTextBrowser { background: white; }")
    panel.contexts_stack = Placeholder(panel.contexts, "")
    return titled_split(upper, panel.contexts_title, panel.contexts_stack, sizes)


def logit_effects_table() -> QTableWidget:
    """A read-only table of the tokens a decoder direction promotes and suppresses."""
    table = QTableWidget(0, 4)
    table.setHorizontalHeaderLabels(["promotes", "logit", "suppresses", "logit"])
    table.verticalHeader().hide()
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.verticalHeader().setDefaultSectionSize(20)
    table.setToolTip("The decoder direction through the final norm and the unembedding: "
                     "the tokens whose logits it raises and lowers most")
    header = table.horizontalHeader()
    for col, mode in enumerate((QHeaderView.ResizeMode.Stretch, QHeaderView.ResizeMode.ResizeToContents) * 2):
        header.setSectionResizeMode(col, mode)
    return table


def fill_logit_effects(table: QTableWidget, promoted, suppressed) -> None:
    """(token, logit) pairs, promoted in green beside suppressed in red."""
    n = max(len(promoted), len(suppressed))
    table.setRowCount(n)
    for i in range(n):
        for col, pairs, colour in ((0, promoted, "#1a6e33"), (2, suppressed, "#a11a1a")):
            if i < len(pairs):
                tok, v = pairs[i]
                item = QTableWidgetItem(show_token(tok))
                item.setForeground(QColor(colour))
                item.setToolTip(repr(tok))
                value = QTableWidgetItem(f"{v:+.2f}")
                value.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                table.setItem(i, col, item)
                table.setItem(i, col + 1, value)


@dataclass
class ContextRow:
    """One top-activating context: a window of tokens around the activating one."""

    doc_id: str
    corpus_index: Optional[int]  # the document's row in the open corpus, to open it
    position: int  # the activating token's position in its document
    value: float
    tokens: list[str]
    acts: list[float]
    center: int


@dataclass
class DashboardData:
    """What a dashboard shows for one feature (built on a worker, shown on the GUI thread)."""

    feature: int
    d_sae: int
    frequency: Optional[float] = None  # None: no feature index yet
    count: Optional[int] = None
    n_tokens: Optional[int] = None
    max: Optional[float] = None
    mean_active: Optional[float] = None
    hist_edges: list[float] = field(default_factory=list)
    hist_counts: list[int] = field(default_factory=list)
    contexts: list[ContextRow] = field(default_factory=list)
    promoted: list[tuple[str, float]] = field(default_factory=list)
    suppressed: list[tuple[str, float]] = field(default_factory=list)
    nearest: list[tuple[int, float]] = field(default_factory=list)
    corpus_note: str = ""  # where the statistics come from, or why there are none
    effects_note: str = ""  # why there are no logit effects, if there are none


class LogAxis(pg.AxisItem):
    """An axis whose values are log10 of the quantity: ticks at 1..9, 1-2-5 or 1-3 times powers
    of ten (fewer the wider the range), labelled with the quantity itself."""

    def tickValues(self, minVal, maxVal, size):
        if not (np.isfinite(minVal) and np.isfinite(maxVal)) or maxVal <= minVal:
            return []
        decades = maxVal - minVal
        steps = (range(1, 10) if decades < 0.6 else (1, 2, 5) if decades < 1.5 else
                 (1, 3) if decades < 3 else (1,))
        ticks = [np.log10(m) + k for k in range(int(np.floor(minVal)) - 1, int(np.ceil(maxVal)) + 1)
                 for m in steps]
        return [(1.0, [t for t in ticks if minVal <= t <= maxVal])]

    def tickStrings(self, values, scale, spacing):
        return [f"{10 ** v:.3g}" for v in values]


def inline_token(token: str) -> str:
    """A token as HTML on one line: newlines and tabs as marks, spaces kept."""
    return display_text(token, newline="↵").replace(" ", "&nbsp;")


def show_token(token: str) -> str:
    """A token quoted so its spaces show (as the automatic labels quote them)."""
    return "'" + token.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + "'"


def contexts_html(contexts: list[ContextRow], top: float) -> str:
    """One table row per context: document (a link that opens it), activation, and the window
    with every token's background from 0 to `top` and the activating token outlined."""
    if not contexts:
        return ""
    top = top if top and top > 0 else max((c.value for c in contexts), default=1.0) or 1.0
    rows = []
    for rank, c in enumerate(contexts, start=1):
        spans = []
        for i, (tok, act) in enumerate(zip(c.tokens, c.acts)):
            bg = scale_colour(max(act, 0.0) / top, FEATURE_SCALE_STOPS) if act > 0 else QColor("white")
            style = f"background-color:{bg.name()}; color:{text_colour_on(bg)};"
            if i == c.center:
                style += " font-weight:bold; text-decoration: underline;"
            tip = html.escape(f"{show_token(tok)} · activation {act:.3g}", quote=True)
            spans.append(f'<span style="{style}" title="{tip}">{inline_token(tok)}</span>')
        doc = html.escape(c.doc_id)
        link = f'<a href="doc:{c.corpus_index}">{doc}</a>' if c.corpus_index is not None else doc
        rows.append(f'<tr><td style="color:#808080">{rank}</td><td>{link}</td>'
                    f'<td align="right"><b>{format_value(c.value)}</b></td>'
                    f'<td style="font-family: monospace">{"".join(spans)}</td></tr>')
    return ('<table cellspacing="0" cellpadding="3" style="font-size: 10pt;">'
            '<tr style="color:#606060"><th>#</th><th align="left">document</th><th>act.</th>'
            '<th align="left">context (activating token underlined)</th></tr>' + "".join(rows) + "</table>")


class FeatureDashboard(QWidget):
    """The dashboard widget. The session fills it; it reports navigation, label edits, exports."""

    feature_requested = Signal(int)  # follow a nearest feature, or Back/Forward
    label_edited = Signal(int, str)
    label_reset = Signal(int)
    document_requested = Signal(int)  # corpus index of a context's document
    export_requested = Signal(str)  # "png" or "csv"
    build_index_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.feature = -1
        self.data: Optional[DashboardData] = None
        self.history: list[int] = []
        self.pos = -1
        self._navigating = False
        self.labels: Callable[[int], str] = lambda f: ""

        self.back = QToolButton(text="◀")
        self.back.setToolTip("Previous feature (Alt+Left)")
        self.back.clicked.connect(lambda: self._step(-1))
        self.forward = QToolButton(text="▶")
        self.forward.setToolTip("Next feature (Alt+Right)")
        self.forward.clicked.connect(lambda: self._step(1))
        QShortcut(QKeySequence("Alt+Left"), self, lambda: self._step(-1))
        QShortcut(QKeySequence("Alt+Right"), self, lambda: self._step(1))
        self.title = QLabel()
        self.title.setStyleSheet("font-weight: 600; font-size: 12pt;")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.export_button = QToolButton(text="Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_button)
        menu.addAction("Dashboard as PNG…", lambda: self.export_requested.emit("png"))
        menu.addAction("Contexts as CSV…", lambda: self.export_requested.emit("csv"))
        self.export_button.setMenu(menu)
        top = QHBoxLayout()
        top.addWidget(self.back)
        top.addWidget(self.forward)
        top.addWidget(self.title, 1)
        top.addWidget(self.export_button)

        self.label_edit = QLineEdit()
        self.label_edit.setPlaceholderText("No label yet: type one and press Enter")
        self.label_edit.setToolTip("The feature's label, saved with the dictionary (labels.json) "
                                   "when you press Enter or leave the field")
        self.label_edit.editingFinished.connect(self._label_entered)
        self.label_kind = QLabel()
        self.label_kind.setMinimumWidth(48)
        self.reset_button = QPushButton("Automatic")
        self.reset_button.setToolTip("Drop the edited label and use the automatic one again")
        self.reset_button.clicked.connect(lambda: self.label_reset.emit(self.feature))
        label_row = QHBoxLayout()
        label_row.addWidget(QLabel("Label:"))
        label_row.addWidget(self.label_edit, 1)
        label_row.addWidget(self.label_kind)
        label_row.addWidget(self.reset_button)

        self.stats = QLabel()
        self.stats.setWordWrap(True)
        self.stats.setTextFormat(Qt.TextFormat.PlainText)
        self.stats.setStyleSheet("color: #303030;")
        self.build_button = QPushButton("Build feature index")
        self.build_button.setToolTip("Encode the open corpus' cached tokens once, for contexts, "
                                     "histograms, frequencies and search by token")
        self.build_button.clicked.connect(self.build_index_requested.emit)
        self.build_button.hide()
        stats_row = QHBoxLayout()
        stats_row.addWidget(self.stats, 1)
        stats_row.addWidget(self.build_button)

        # Histogram: created once, then only setData (pyqtgraph advice).
        self.hist = pg.PlotWidget(background="w", axisItems={"bottom": LogAxis("bottom")})
        self.hist.setMenuEnabled(False)
        self.hist.hideButtons()
        self.hist.setMouseEnabled(x=False, y=False)
        # Bins are log-spaced: bars are drawn at log10 of their edges, and the axis labels them
        # as powers of ten (BarGraphItem does not follow a plot's log mode).
        self.hist.getAxis("bottom").enableAutoSIPrefix(False)  # its values are logarithms
        self.hist.setLabel("bottom", "activation (log scale)")
        self.hist.setLabel("left", "tokens")
        self.hist.setMinimumSize(220, 150)
        self.hist_bars = pg.BarGraphItem(x0=[], x1=[], height=[], brush=pg.mkBrush("#fd8d3c"),
                                         pen=pg.mkPen("#d94801", width=0.5))
        self.hist.addItem(self.hist_bars)
        self.hist_note = pg.TextItem("", color="#808080", anchor=(0.5, 0.5))
        self.hist.addItem(self.hist_note)

        self.effects = logit_effects_table()
        self.effects_stack = Placeholder(self.effects, "")
        effects_box = _titled("Logit effects", self.effects_stack)

        self.nearest = QTableWidget(0, 3)
        self.nearest.setHorizontalHeaderLabels(["feature", "cos", "label"])
        self.nearest.verticalHeader().hide()
        self.nearest.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.nearest.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.nearest.verticalHeader().setDefaultSectionSize(20)
        self.nearest.setToolTip("Features whose decoder directions point most the same way. Click to open one.")
        nh = self.nearest.horizontalHeader()
        nh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        nh.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        nh.setStretchLastSection(True)
        self.nearest.cellClicked.connect(self._nearest_clicked)
        self.nearest.setCursor(Qt.CursorShape.PointingHandCursor)
        nearest_box = _titled("Nearest features (decoder cosine)", self.nearest)

        upper = QSplitter(Qt.Orientation.Horizontal)
        upper.addWidget(_titled("Activations where it fires", self.hist))
        upper.addWidget(effects_box)
        upper.addWidget(nearest_box)
        upper.setSizes([250, 290, 240])
        upper.setChildrenCollapsible(False)

        split = contexts_split(self, upper, [230, 420])
        self.contexts.anchorClicked.connect(self._link)

        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(0, 0, 0, 0)
        body_layout.addLayout(label_row)
        body_layout.addLayout(stats_row)
        body_layout.addWidget(split, 1)
        self.stack = Placeholder(body, "Click a feature bar to see its dashboard.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.addLayout(top)
        layout.addWidget(self.stack, 1)
        self._update_nav()

    def sizeHint(self) -> QSize:
        return QSize(780, 720)

    # ------------------------------------------------------------------ API

    def begin(self, feature: int, d_sae: int, label: str, auto: bool, message: str = "Loading…") -> None:
        """A new feature is shown: title, label at once; the rest when `show_data` comes."""
        if self._navigating:
            self._navigating = False
        elif feature != self.current_history():
            del self.history[self.pos + 1:]
            self.history.append(feature)
            self.pos = len(self.history) - 1
        self.feature = feature
        self.data = None
        self.title.setText(f"Feature {feature} of {d_sae:,}")
        self.set_label(label, auto)
        self.stats.setText(message)
        self.build_button.hide()
        self.contexts_title.setText("Top-activating contexts")
        self.contexts_stack.show_message(message)
        self.effects_stack.show_message(message)
        self.nearest.setRowCount(0)
        self.hist_bars.setOpts(x0=[], x1=[], height=[])
        self.hist_note.setText("")
        self.stack.show_content()
        self._update_nav()

    def show_message(self, message: str) -> None:
        self.feature = -1
        self.data = None
        self.title.setText("Feature dashboard")
        self.stack.show_message(message)
        self._update_nav()

    def set_label(self, label: str, auto: bool) -> None:
        if not self.label_edit.hasFocus() or self.label_edit.text() == label:
            self.label_edit.setText(label)
        if not label:
            kind, colour = "none", "#909090"
        elif auto:
            kind, colour = "auto", "#2c7bb6"
        else:
            kind, colour = "edited", "#1a9641"
        self.label_kind.setText(kind)
        self.label_kind.setStyleSheet(f"color: {colour}; font-weight: 600;")
        self.label_kind.setToolTip({"none": "No label", "auto": "Made automatically from the tokens it "
                                    "fires on most", "edited": "Edited by hand; kept over automatic labels"}[kind])
        self.reset_button.setEnabled(kind == "edited")

    def show_data(self, data: DashboardData, labels: Callable[[int], str]) -> None:
        if data.feature != self.feature:
            return
        self.data = data
        self.labels = labels
        if data.frequency is None:
            self.stats.setText(data.corpus_note or "No feature index: frequencies, the histogram and "
                               "contexts need one, built once from the open corpus.")
            self.build_button.setVisible(True)
        else:
            n = data.n_tokens or 0
            parts = [f"Fires on {data.frequency * 100:.3g}% of tokens ({data.count:,} of {n:,})"
                     if data.count else f"Never fires on the {n:,} corpus tokens (dead here)"]
            if data.count:
                parts.append(f"max {format_value(data.max)}")
                parts.append(f"mean when active {format_value(data.mean_active)}")
            self.stats.setText(" · ".join(parts) + (f"\n{data.corpus_note}" if data.corpus_note else ""))
            self.build_button.hide()
        self._show_histogram(data)
        self._show_contexts(data)
        self._show_effects(data)
        self._show_nearest(data, labels)

    def current_history(self) -> int:
        return self.history[self.pos] if 0 <= self.pos < len(self.history) else -1

    def contexts_text(self) -> str:
        return self.contexts.toPlainText()

    # ------------------------------------------------------------------ export

    def export_png(self, path: str | Path, scale: float = 2.0) -> Path:
        path = Path(path)
        size = self.size()
        pixmap = QPixmap(size * scale)
        pixmap.setDevicePixelRatio(scale)
        pixmap.fill(QColor("white"))
        self.render(pixmap)
        if not pixmap.save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        return path

    def write_contexts_csv(self, path: str | Path) -> Path:
        """The top-activating contexts: rank, document, position, activation, the activating
        token, the text before and after it in the window, and the window's largest activation."""
        if self.data is None or not self.data.contexts:
            raise ValueError("There are no contexts to export.")
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["feature", "rank", "doc_id", "position", "activation", "token", "before",
                             "after", "window_max"])
            for rank, c in enumerate(self.data.contexts, start=1):
                writer.writerow([self.data.feature, rank, c.doc_id, c.position, repr(float(c.value)),
                                 c.tokens[c.center], "".join(c.tokens[:c.center]),
                                 "".join(c.tokens[c.center + 1:]), repr(float(max(c.acts)))])
        return path

    # ------------------------------------------------------------------ internals

    def _show_histogram(self, data: DashboardData) -> None:
        edges = np.asarray(data.hist_edges, dtype=np.float64)
        counts = np.asarray(data.hist_counts, dtype=np.float64)
        if len(edges) >= 2 and counts.sum() > 0:
            x = np.log10(edges)
            self.hist_bars.setOpts(x0=x[:-1], x1=x[1:], height=counts)
            self.hist_note.setText("")
            shown = np.nonzero(counts)[0]
            self.hist.setXRange(x[shown[0]], x[shown[-1] + 1], padding=0.04)
            self.hist.setYRange(0, counts.max() * 1.05, padding=0)
        else:
            self.hist_bars.setOpts(x0=[], x1=[], height=[])
            self.hist_note.setText("no activations" if data.frequency is not None else "no feature index")
            self.hist_note.setPos(0.5, 0.5)
            self.hist.setXRange(0, 1)
            self.hist.setYRange(0, 1)

    def _show_contexts(self, data: DashboardData) -> None:
        if data.contexts:
            self.contexts_title.setText(f"Top-activating contexts ({len(data.contexts)}) — "
                                        "click a document to open it")
            self.contexts.setHtml(contexts_html(data.contexts, data.max or 0.0))
            self.contexts_stack.show_content()
        elif data.frequency is None:
            self.contexts_stack.show_message(data.corpus_note or "Contexts come from the feature index "
                                             "of the open corpus, which is not built.")
        else:
            self.contexts_stack.show_message("The feature never fires on the open corpus.")

    def _show_effects(self, data: DashboardData) -> None:
        if not data.promoted and not data.suppressed:
            self.effects_stack.show_message(data.effects_note or "No logit effects.")
            return
        fill_logit_effects(self.effects, data.promoted, data.suppressed)
        self.effects_stack.show_content()

    def _show_nearest(self, data: DashboardData, labels: Callable[[int], str]) -> None:
        self.nearest.setRowCount(len(data.nearest))
        for i, (f, cos) in enumerate(data.nearest):
            items = [QTableWidgetItem(f"f{f}"), QTableWidgetItem(f"{cos:.2f}"), QTableWidgetItem(labels(f))]
            items[0].setData(Qt.ItemDataRole.UserRole, f)
            items[0].setForeground(QColor("#1f5fa8"))
            for col, item in enumerate(items):
                item.setToolTip(f"Open feature {f}'s dashboard")
                self.nearest.setItem(i, col, item)

    def _nearest_clicked(self, row: int, _col: int) -> None:
        item = self.nearest.item(row, 0)
        if item is not None:
            self.feature_requested.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def _step(self, delta: int) -> None:
        pos = self.pos + delta
        if 0 <= pos < len(self.history):
            self.pos = pos
            self._navigating = True
            self._update_nav()
            self.feature_requested.emit(self.history[pos])

    def _update_nav(self) -> None:
        self.back.setEnabled(self.pos > 0)
        self.forward.setEnabled(0 <= self.pos < len(self.history) - 1)

    def _label_entered(self) -> None:
        if self.feature >= 0:
            self.label_edited.emit(self.feature, self.label_edit.text().strip())

    def _link(self, url: QUrl) -> None:
        text = url.toString()
        if text.startswith("doc:") and text[4:].isdigit():
            self.document_requested.emit(int(text[4:]))


def _titled(title: str, widget: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    label = QLabel(title)
    label.setStyleSheet("font-weight: 600;")
    layout.addWidget(label)
    layout.addWidget(widget, 1)
    return box
