"""The Crosscoder tab (issue 6, seed 003): what a crosscoder of a base model and its variant found.

Left: the latents in three lists (variant-only, base-only, shared), sortable by relative decoder
norm, firing frequency and Latent Scaling's nu, with a filter box; double-click or Enter opens a
latent's dashboard, and "Steer with this latent" hands its decoder row to the Steering tab.
Right, in tabs: the relative-decoder-norm histogram with the class thresholds and counts per
class, the decoder-cosine histogram of shared latents, the latent's dashboard (top-activating
contexts with per-token highlighting, logit effects through each model's head), and the heavier
analyses: ablation of the variant-only set against a frequency-matched random set (seed 003
figure 2), reasoning-category tags, and the parallelogram test (figure 4).

Plain data in, signals out; gui/crosscoder_session.py owns the crosscoder, the models and the
worker. Plot items are created once and only get new data afterwards.
"""

from __future__ import annotations

import csv
import html
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QKeySequence, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QMenu, QProgressBar, QPushButton, QSplitter, QTableView,
                               QTableWidget, QTableWidgetItem, QTabWidget, QToolButton,
                               QVBoxLayout, QWidget)

from gui.dashboard import ContextRow, contexts_html, contexts_split, fill_logit_effects, logit_effects_table
from gui.style import Placeholder
from gui.table_model import ListTableModel

# Okabe-Ito colours: one per latent class (base blue .. variant vermillion) and per model.
CLASS_COLOURS = {"base-only": "#0072B2", "base-leaning": "#56B4E9", "shared": "#009E73",
                 "variant-leaning": "#E69F00", "variant-only": "#D55E00", "dead": "#999999"}
MODEL_COLOURS = ("#0072B2", "#D55E00")
LISTS = ("variant-only", "base-only", "shared")
LIST_TITLES = {"variant-only": "Variant-only", "base-only": "Base-only", "shared": "Shared"}
ANALYSES = ("scaling", "ablation", "reasoning", "geometry")
ANALYSIS_TITLES = {"scaling": "Latent Scaling", "ablation": "Ablation", "reasoning": "Reasoning tags",
                   "geometry": "Geometry"}
ANALYSIS_TIPS = {
    "scaling": "Latent Scaling (Minder, Dumas et al. 2025) of the variant-only and base-only latents: "
               "does the other model hold the latent's direction after all? Flags latents that look "
               "exclusive only because of the sparsity penalty (nu columns in the lists)",
    "ablation": "Remove the variant-only latents' decoded contribution from both models' residual and "
                "measure the change in next-token logits (seed 003, figure 2), against a random set of "
                "latents with the same firing frequencies",
    "reasoning": "Tag latents with the reasoning category they fire on (self-reflection, deductive, "
                 "alternative, contrastive) from the bundled prompt sets",
    "geometry": "The parallelogram test of analogy quadruples in both models' residuals (seed 003, "
                "figure 4): cumulative fraction of quadruples below each loss, base against variant",
}
METRICS = (("mean_abs_logit_change", "mean |logit change|"), ("kl", "KL(clean ‖ ablated), nats"),
           ("loss_change", "next-token loss change, nats"))


def _num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _percent(x) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return "0" if x == 0 else f"{100 * x:.3g}%"


def _panel(title: str, body: QWidget, extra: Optional[QWidget] = None) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    head = QHBoxLayout()
    label = QLabel(title)
    label.setStyleSheet("font-weight: 600;")
    head.addWidget(label, 1)
    if extra is not None:
        head.addWidget(extra)
    layout.addLayout(head)
    layout.addWidget(body, 1)
    return box


def _waiting_panel(panel: QWidget, parts: list, message: str) -> Placeholder:
    """Lay `parts` (widgets, layouts, or (widget, stretch)) out top to bottom in `panel`, behind a
    Placeholder that shows `message` until there is something to show."""
    body = QWidget()
    layout = QVBoxLayout(body)
    layout.setContentsMargins(0, 0, 0, 0)
    for part in parts:
        part, stretch = part if isinstance(part, tuple) else (part, 0)
        if isinstance(part, QWidget):
            layout.addWidget(part, stretch)
        else:
            layout.addLayout(part)
    stack = Placeholder(body, message)
    outer = QVBoxLayout(panel)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(stack)
    return stack


def _note() -> QLabel:
    note = QLabel("")
    note.setWordWrap(True)
    note.setStyleSheet("color: #404040;")
    return note


def _plot(title: str = "", x: str = "", y: str = "") -> pg.PlotWidget:
    plot = pg.PlotWidget(background="w", title=title)
    plot.setMenuEnabled(False)
    plot.hideButtons()
    plot.setMouseEnabled(x=False, y=False)
    if x:
        plot.setLabel("bottom", x)
    if y:
        plot.setLabel("left", y)
    for axis in ("left", "bottom"):
        plot.getAxis(axis).enableAutoSIPrefix(False)
    return plot


# ---------------------------------------------------------------------------------------------
# The latent lists


# steer_requested's model for "each model with its own decoder row, in proportion" (a
# variant-only latent then barely moves the base; core.steering.crosscoder_direction)
OWN_ROWS = -1


class LatentTableModel(ListTableModel):
    """Rows are dicts: latent, rel, cos, freq, nu_e, nu_r, scaling (text), flagged, tag."""

    COLUMNS = ("Latent", "Rel.", "Cos.", "Freq.", "ν ε", "ν r", "Scaling", "Tag")
    KEYS = ("latent", "rel", "cos", "freq", "nu_e", "nu_r", "scaling", "tag")
    TIPS = ("The latent's index", "Relative decoder norm ‖d_variant‖ / (‖d_base‖ + ‖d_variant‖): 0 base only, "
            "1 variant only", "Cosine of the latent's base and variant decoder directions",
            "Fraction of tokens on which it fires", "Latent Scaling: beta of the other model over the "
            "owner's for the reconstruction error (large: Complete Shrinkage)",
            "Latent Scaling: the same for the reconstruction (large: Latent Decoupling)",
            "Latent Scaling's verdict: is it exclusive, or only made to look so by the sparsity penalty?",
            "Reasoning category it fires on")

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, key = self.rows[index.row()], self.KEYS[index.column()]
        v = row.get(key)
        if role == Qt.ItemDataRole.DisplayRole:
            if key == "latent":
                return str(v)
            if key == "freq":
                return _percent(v)
            if key in ("scaling", "tag"):
                return v or ""
            if key in ("rel", "cos"):
                return "–" if v is None or not math.isfinite(v) else f"{v:.3f}"
            return _num(v, 2)
        if role == Qt.ItemDataRole.UserRole:  # the sort key: numbers as numbers, missing last
            if key in ("scaling", "tag"):
                return v or "~"
            return float(v) if v is not None and math.isfinite(v) else -1e300
        if role == Qt.ItemDataRole.TextAlignmentRole and key not in ("scaling", "tag"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and key == "scaling" and row.get("flagged"):
            return QBrush(QColor("#b35900"))
        if role == Qt.ItemDataRole.ToolTipRole and key == "scaling":
            return row.get("scaling_tip") or None
        if role == Qt.ItemDataRole.ToolTipRole and key == "tag":
            return v or None  # the whole tag where the column elides it
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.ToolTipRole and orientation == Qt.Orientation.Horizontal:
            return self.TIPS[section]
        return super().headerData(section, orientation, role)


class LatentFilter(QSortFilterProxyModel):
    """Digits: latents whose index starts with them; other text: in the tag or Latent Scaling
    verdict (case-insensitive)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.text = ""
        self.setSortRole(Qt.ItemDataRole.UserRole)

    def set_text(self, text: str) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt 6.9+: invalidateFilter() is deprecated
            self.beginFilterChange()
            self.text = text.strip().lower().lstrip("#")
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.text = text.strip().lower().lstrip("#")
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex) -> bool:
        if not self.text:
            return True
        row = self.sourceModel().rows[source_row]
        if self.text.isdigit():
            return str(row["latent"]).startswith(self.text)
        return any(self.text in (row.get(k) or "").lower() for k in ("tag", "scaling"))


class LatentList(QTableView):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_ = LatentTableModel(self)
        self.proxy = LatentFilter(self)
        self.proxy.setSourceModel(self.model_)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(21)
        self.setWordWrap(False)
        # Numbers and the verdict as wide as they need; the Tag takes what is left and elides
        # ("self-refl…", the full tag in its tooltip) instead of running past the right edge:
        # a last section that also resized to its contents was clipped at 1280 px.
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(False)
        header.setSectionResizeMode(LatentTableModel.KEYS.index("tag"), QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(min(header.minimumSectionSize(), 32))
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.setToolTip("Double-click or press Enter to open the latent's dashboard")

    def set_rows(self, rows: list[dict]) -> None:
        keep = self.current_latent()
        self.model_.set_rows(rows)
        if keep is not None:
            self.select_latent(keep)

    def latents(self) -> list[int]:
        """The latents shown, in the order shown."""
        return [int(self.proxy.data(self.proxy.index(r, 0))) for r in range(self.proxy.rowCount())]

    def current_latent(self) -> Optional[int]:
        index = self.currentIndex()
        if not index.isValid():
            return None
        return int(self.proxy.data(self.proxy.index(index.row(), 0)))

    def select_latent(self, latent: int) -> bool:
        for r in range(self.proxy.rowCount()):
            if int(self.proxy.data(self.proxy.index(r, 0))) == latent:
                self.setCurrentIndex(self.proxy.index(r, 0))
                self.scrollTo(self.proxy.index(r, 0))
                return True
        return False


# ---------------------------------------------------------------------------------------------
# Panels: each can write its data as CSV (the view's Export menu, through gui/dialogs.export_view)


class HistogramPanel(QWidget):
    """A histogram as bars (created once), bars coloured per bin, optional vertical lines."""

    def __init__(self, title: str, xlabel: str, ylabel: str = "latents", lines=(), log: bool = False, parent=None):
        super().__init__(parent)
        self.title = title
        self.edges: list[float] = []
        self.counts: list[int] = []
        self.plot = _plot(x=xlabel, y=ylabel)
        self.plot.setMinimumHeight(150)
        self.bars = pg.BarGraphItem(x0=[], x1=[], height=[], brush=pg.mkBrush("#999999"),
                                    pen=pg.mkPen("#ffffff", width=0.5))
        self.plot.addItem(self.bars)
        self.lines = []
        for x in lines:
            line = pg.InfiniteLine(x, angle=90, pen=pg.mkPen("#606060", width=1, style=Qt.PenStyle.DashLine))
            self.plot.addItem(line)
            self.lines.append(line)
        self.log = QCheckBox("log count")
        self.log.setToolTip("Bar heights as log10(1 + count): small classes stay visible beside a large one")
        self.log.setChecked(log)
        self.log.toggled.connect(lambda _on: self._draw())
        self.key = QLabel("")
        self.key.setWordWrap(True)
        self.key.setTextFormat(Qt.TextFormat.RichText)
        self.note = pg.TextItem("", color="#808080", anchor=(0.5, 0.5))
        self.plot.addItem(self.note)
        self._colours: list[str] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        label = QLabel(title)
        label.setStyleSheet("font-weight: 600;")
        head.addWidget(label, 1)
        head.addWidget(self.log)
        layout.addLayout(head)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.key)

    def set_histogram(self, edges, counts, colours: list[str], key_html: str = "", empty: str = "") -> None:
        self.edges, self.counts, self._colours = list(edges), [int(c) for c in counts], list(colours)
        self.key.setText(key_html)
        self.note.setText(empty if not sum(self.counts) else "")
        self._draw()

    def heights(self) -> list[int]:
        """The counts drawn (whatever the log setting)."""
        return list(self.counts)

    def _draw(self) -> None:
        if len(self.edges) < 2:
            self.bars.setOpts(x0=[], x1=[], height=[], brushes=None)
            return
        e = np.asarray(self.edges, dtype=float)
        c = np.asarray(self.counts, dtype=float)
        h = np.log10(1 + c) if self.log.isChecked() else c
        self.plot.setLabel("left", "log10(1 + latents)" if self.log.isChecked() else "latents")
        self.bars.setOpts(x0=e[:-1], x1=e[1:], height=h, brushes=[pg.mkBrush(col) for col in self._colours])
        self.plot.setXRange(e[0], e[-1], padding=0.02)
        top = float(h.max()) if h.size and h.max() > 0 else 1.0
        self.plot.setYRange(0, top * 1.08, padding=0)
        self.note.setPos((e[0] + e[-1]) / 2, top / 2)

    def write_csv(self, path) -> Path:
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["bin_low", "bin_high", "latents"])
            for i, c in enumerate(self.counts):
                w.writerow([f"{self.edges[i]:.6g}", f"{self.edges[i + 1]:.6g}", c])
        return path


class ListsPanel(QWidget):
    """The three latent lists with a shared filter box and the actions on the selected latent."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter: a latent number, or text of its tag or Latent Scaling verdict")
        self.filter.setClearButtonEnabled(True)
        self.tabs = QTabWidget()
        self.lists: dict[str, LatentList] = {}
        for key in LISTS:
            view = LatentList()
            self.lists[key] = view
            self.tabs.addTab(view, LIST_TITLES[key])
        self.filter.textChanged.connect(self._filter)
        self.dashboard_button = QPushButton("Dashboard")
        self.dashboard_button.setToolTip("Open the selected latent's dashboard (Enter or double-click)")
        self.steer_button = QToolButton()
        self.steer_button.setText("Steer with this latent")
        self.steer_button.setToolTip("Add the latent to the Steering tab: one slider that steers each model along "
                                     "its own decoder row, in proportion to the rows' norms (a variant-only latent "
                                     "barely moves the base). The menu adds one model's row alone.")
        self.steer_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.steer_menu = QMenu(self.steer_button)
        self.steer_button.setMenu(self.steer_menu)
        self.note = QLabel("")
        self.note.setStyleSheet("color: #606060;")
        self.note.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.dashboard_button)
        buttons.addWidget(self.steer_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.note)
        layout.addLayout(buttons)

    def _filter(self, text: str) -> None:
        for view in self.lists.values():
            view.proxy.set_text(text)

    def current(self) -> LatentList:
        return self.lists[LISTS[self.tabs.currentIndex()]]

    def current_key(self) -> str:
        return LISTS[self.tabs.currentIndex()]

    def write_csv(self, path) -> Path:
        """Every latent of the three lists (all rows, not only the filtered ones)."""
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["list", "latent", "relative_norm", "cosine", "frequency", "nu_error", "nu_reconstruction",
                        "latent_scaling", "tag"])
            for key, view in self.lists.items():
                for r in view.model_.rows:
                    w.writerow([key, r["latent"]] + ["" if r.get(k) is None else repr(float(r[k]))
                                                     for k in ("rel", "cos", "freq", "nu_e", "nu_r")]
                               + [r.get("scaling") or "", r.get("tag") or ""])
        return path


class DashboardPanel(QWidget):
    """One latent: what it is, where it fires, what it writes into each model's logits."""

    steer_requested = Signal(int, int)  # latent, model index

    def __init__(self, parent=None):
        super().__init__(parent)
        self.latent = -1
        self.data = None
        self.model_names = ["base", "variant"]
        self.title = QLabel("Latent dashboard")
        self.title.setStyleSheet("font-weight: 600; font-size: 12pt;")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        self.stats.setStyleSheet("color: #303030;")
        self.steer_buttons = []
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        for m in range(2):
            b = QPushButton(f"Steer with {self.model_names[m]} decoder")
            b.setToolTip("Add this latent's decoder row for that model to the Steering tab")
            b.clicked.connect(lambda _c=False, m=m: self.steer_requested.emit(self.latent, m))
            b.setEnabled(False)
            self.steer_buttons.append(b)
            top.addWidget(b)

        self.hist = _plot(x="activation", y="tokens")
        self.hist.setMinimumSize(200, 140)
        self.hist_bars = pg.BarGraphItem(x0=[], x1=[], height=[], brush=pg.mkBrush("#fd8d3c"),
                                         pen=pg.mkPen("#d94801", width=0.5))
        self.hist.addItem(self.hist_bars)
        self.effects: list[QTableWidget] = []
        self.effects_stacks: list[Placeholder] = []
        self.effects_titles: list[QLabel] = []
        self.effects_notes: list[QLabel] = []
        upper = QSplitter(Qt.Orientation.Horizontal)
        upper.addWidget(_panel("Activations where it fires", self.hist))
        for m in range(2):
            table = logit_effects_table()
            stack = Placeholder(table, "")
            note = QLabel("")
            note.setWordWrap(True)
            note.setStyleSheet("color: #8a4b00;")
            note.hide()
            holder = QWidget()
            holder_layout = QVBoxLayout(holder)
            holder_layout.setContentsMargins(0, 0, 0, 0)
            holder_layout.addWidget(stack, 1)
            holder_layout.addWidget(note)
            self.effects_notes.append(note)
            box = _panel("", holder)
            title = box.findChild(QLabel)
            self.effects.append(table)
            self.effects_stacks.append(stack)
            self.effects_titles.append(title)
            upper.addWidget(box)
        upper.setSizes([200, 290, 290])
        upper.setChildrenCollapsible(False)

        split = contexts_split(self, upper, [210, 380])
        self.stack = _waiting_panel(self, [top, self.stats, (split, 1)],
                                    "Double-click a latent in the lists (or select it and press Enter) "
                                    "to see its dashboard.")
        self.set_model_names(self.model_names)

    def set_model_names(self, names: list[str]) -> None:
        self.model_names = list(names)
        for m, name in enumerate(names[:2]):
            self.steer_buttons[m].setText(f"Steer: {name} decoder")
            self.effects_titles[m].setText(f"Logit effects in {name}")
            self.effects_titles[m].setStyleSheet(f"font-weight: 600; color: {MODEL_COLOURS[m]};")

    def clear(self, message: str) -> None:
        """No latent shown (a new crosscoder was opened)."""
        self.latent, self.data = -1, None
        for b in self.steer_buttons:
            b.setEnabled(False)
        self.stack.show_message(message)

    def begin(self, latent: int, title_html: str, message: str) -> None:
        self.latent = latent
        self.data = None
        self.title.setText(title_html)
        self.stats.setTextFormat(Qt.TextFormat.PlainText)
        self.stats.setText(message)
        self.contexts_title.setText("Top-activating contexts")
        self.contexts_stack.show_message(message)
        for stack in self.effects_stacks:
            stack.show_message("…")
        for note in self.effects_notes:
            note.hide()
        self.hist_bars.setOpts(x0=[], x1=[], height=[])
        for b in self.steer_buttons:
            b.setEnabled(latent >= 0)
        self.stack.show_content()

    def show_error(self, latent: int, message: str) -> None:
        if latent != self.latent:
            return
        self.stats.setText(f'<span style="color:#b00020">{html.escape(message)}</span>')
        self.stats.setTextFormat(Qt.TextFormat.RichText)
        self.contexts_stack.show_message(message)
        for stack in self.effects_stacks:
            stack.show_message("")

    def show_dashboard(self, dash, title_html: str, stats: str) -> None:
        """`dash`: a core.crosscoder.dashboard.LatentDashboard."""
        if dash.latent != self.latent:
            return
        self.data = dash
        self.title.setText(title_html)
        self.stats.setTextFormat(Qt.TextFormat.PlainText)
        self.stats.setText(stats)
        edges = np.asarray(dash.hist_edges, dtype=float)
        counts = np.asarray(dash.hist_counts, dtype=float)
        if edges.size >= 2 and counts.sum() > 0:
            self.hist_bars.setOpts(x0=edges[:-1], x1=edges[1:], height=counts)
            self.hist.setXRange(edges[0], edges[-1], padding=0.03)
            self.hist.setYRange(0, counts.max() * 1.05, padding=0)
        else:
            self.hist_bars.setOpts(x0=[], x1=[], height=[])
        rows = self.context_rows()
        if rows:
            self.contexts_title.setText(f"Top-activating contexts ({len(rows)} of {dash.count:,} tokens where it "
                                        f"fires; {dash.n_documents:,} documents read)")
            self.contexts.setHtml(contexts_html(rows, dash.max))
            self.contexts_stack.show_content()
        else:
            self.contexts_stack.show_message(f"The latent never fires on the {dash.n_tokens:,} tokens read.")
        for m, name in enumerate(dash.model_names[:2]):
            self._effects(m, dash.effects.get(name, {}))

    def context_rows(self) -> list[ContextRow]:
        if self.data is None:
            return []
        return [ContextRow(doc_id=c.doc_id, corpus_index=None, position=c.position, value=c.value, tokens=c.tokens,
                           acts=c.acts, center=c.center) for c in self.data.contexts]

    def _effects(self, m: int, e: dict) -> None:
        up, down = e.get("promoted") or [], e.get("suppressed") or []
        note = self.effects_notes[m]
        if not up and not down:
            note.hide()
            self.effects_stacks[m].show_message(e.get("note") or "No logit effects.")
            return
        note.setText(e.get("note") or "")
        note.setVisible(bool(e.get("note")))
        fill_logit_effects(self.effects[m], up, down)
        self.effects_stacks[m].show_content()

    def write_csv(self, path) -> Path:
        """The contexts (rank, document, position, activation, token, the window as text and
        per-token activations) and each model's logit effects."""
        if self.data is None:
            raise ValueError("No dashboard is shown.")
        d, path = self.data, Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["kind", "latent", "rank", "document", "position", "value", "token", "window", "window_acts"])
            for rank, c in enumerate(d.contexts, start=1):
                w.writerow(["context", d.latent, rank, c.doc_id, c.position, repr(float(c.value)), c.tokens[c.center],
                            "".join(c.tokens), " ".join(f"{a:.4g}" for a in c.acts)])
            for name, e in d.effects.items():
                for kind in ("promoted", "suppressed"):
                    for rank, (tok, v) in enumerate(e.get(kind) or [], start=1):
                        w.writerow([f"{kind} in {name}", d.latent, rank, "", "", repr(float(v)), tok, "", ""])
        return path


class AblationPanel(QWidget):
    """Seed 003 figure 2: per-document (or per-token) change when a latent set is ablated, base
    against variant, the set solid and its frequency-matched random set dashed."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.data: Optional[dict] = None  # AblationResult.to_json() plus per-token values
        self.metric_box = QComboBox()
        for key, text in METRICS:
            self.metric_box.addItem(text, key)
        self.level = QComboBox()
        self.level.addItem("per document", "document")
        self.level.addItem("per token", "token")
        self.metric_box.currentIndexChanged.connect(lambda _i: self._draw())
        self.level.currentIndexChanged.connect(lambda _i: self._draw())
        self.plot = _plot(x="mean |logit change|", y="documents")
        self.legend = self.plot.addLegend(offset=(-5, 5), labelTextColor="#202020")
        self.items: dict[tuple[str, int], pg.PlotDataItem] = {}
        for baseline in (False, True):
            for m in range(2):
                colour = QColor(MODEL_COLOURS[m])
                pen = pg.mkPen(colour, width=2, style=Qt.PenStyle.DashLine if baseline else Qt.PenStyle.SolidLine)
                fill = QColor(colour)
                fill.setAlpha(0 if baseline else 60)
                item = pg.PlotDataItem([], [], stepMode="center", pen=pen, fillLevel=None if baseline else 0,
                                       brush=fill)
                self.plot.addItem(item)
                self.items[("random" if baseline else "set", m)] = item
        self.summary = QTableWidget(0, 6)
        self.summary.setHorizontalHeaderLabels(["set", "model", "latents", "mean", "doc median", "doc p90"])
        self.summary.verticalHeader().hide()
        self.summary.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.summary.verticalHeader().setDefaultSectionSize(20)
        self.summary.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.summary.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.summary.setMaximumHeight(130)
        self.note = _note()
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Metric:"))
        controls.addWidget(self.metric_box)
        controls.addWidget(self.level)
        controls.addStretch(1)
        self.stack = _waiting_panel(self, [controls, (self.plot, 1), self.summary, self.note],
                                    "Ablation removes the variant-only latents' decoded contribution "
                                    "from both models' residual and measures how the next-token "
                                    "distribution moves (seed 003, figure 2). Press Ablation above.")

    def show_result(self, data: dict) -> None:
        self.data = data
        self.note.setText(data.get("note", ""))
        self._draw()
        self.stack.show_content()

    def _fill_summary(self) -> None:
        data = self.data
        self.summary.setRowCount(0)
        metric = self.metric_box.currentData()
        for row in data["summary"]:
            if row["set"] not in (data["set"], data.get("random")):
                continue
            r = self.summary.rowCount()
            self.summary.insertRow(r)
            cells = [row["set"], row["model"], str(row["n_latents"]), _num(row.get(f"{metric}_mean")),
                     _num(row.get(f"{metric}_doc_median")), _num(row.get(f"{metric}_doc_p90"))]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.summary.setItem(r, c, item)

    def histogram(self, set_name: str, model: str) -> tuple[list[float], list[int]]:
        """(edges, counts) drawn for a set and model at the chosen metric and level; the same
        edges for every curve (the range of all four)."""
        d = self.data
        metric, level = self.metric_box.currentData(), self.level.currentData()
        values = d["values"][level][metric]
        every = np.concatenate([np.asarray(v, dtype=float) for s in values.values() for v in s.values()] or [np.zeros(0)])
        every = every[np.isfinite(every)]
        lo = float(min(0.0, every.min())) if every.size else 0.0
        hi = float(every.max()) if every.size else 1.0
        hi = hi if hi > lo else lo + 1e-9
        v = np.asarray(values[set_name][model], dtype=float)
        v = v[np.isfinite(v)]
        counts, edges = np.histogram(np.clip(v, lo, hi), bins=30, range=(lo, hi))
        return edges.tolist(), counts.tolist()

    def _draw(self) -> None:
        d = self.data
        if d is None:
            return
        self.legend.clear()
        self._fill_summary()
        label = dict(METRICS)[self.metric_box.currentData()]
        self.plot.setLabel("bottom", label)
        self.plot.setLabel("left", "documents" if self.level.currentData() == "document" else "tokens")
        for (kind, m), item in self.items.items():
            name = d["model_names"][m] if m < len(d["model_names"]) else ""
            set_name = d["set"] if kind == "set" else d.get("random")
            if set_name is None or name not in d["ablated_models"]:
                item.setData([], [])
                continue
            edges, counts = self.histogram(set_name, name)
            item.setData(edges, counts)
            n = len(d["sets"][set_name])
            self.legend.addItem(item, f"{set_name} ({n}) in {name}" if kind == "set" else f"random matched ({n}) in {name}")
        self.changed.emit()

    def write_csv(self, path) -> Path:
        if self.data is None:
            raise ValueError("No ablation to export.")
        d, path = self.data, Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["kind", "set", "model", "metric", "document", "value"])
            for row in d["summary"]:
                for key, value in row.items():
                    if key.endswith(("_mean", "_median", "_p90")):
                        w.writerow(["summary", row["set"], row["model"], key, "", "" if value is None else value])
            for s, per_model in d["per_document"].items():
                for m, per_metric in per_model.items():
                    for met, values in per_metric.items():
                        for i, v in enumerate(values):
                            w.writerow(["document", s, m, met, i, "" if v is None else v])
        return path


class _SortItem(QTableWidgetItem):
    """A cell that sorts by its UserRole value (numbers as numbers), not by its text."""

    def __lt__(self, other) -> bool:
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)


class ReasoningPanel(QWidget):
    """The latents tagged with a reasoning category, their specificity and class."""

    latent_activated = Signal(int)

    COLUMNS = ("Latent", "Tag", "Specificity", "Class", "Rel. norm", "Peak on its set", "Peak on control")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.data: Optional[dict] = None
        self.counts = QLabel("")
        self.counts.setWordWrap(True)
        self.counts.setTextFormat(Qt.TextFormat.RichText)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setSortingEnabled(True)
        self.table.setToolTip("Double-click a latent to open its dashboard")
        self.table.cellDoubleClicked.connect(self._activated)
        self.stack = _waiting_panel(self, [self.counts, (self.table, 1)],
                                    "Reasoning tags run the bundled prompt sets of self-reflection, "
                                    "deductive, alternative and contrastive reasoning and a neutral "
                                    "control set through both models. Press Reasoning tags above.")

    def show_result(self, data: dict) -> None:
        """`data`: ReasoningTags.to_json()."""
        self.data = data
        rows = data["rows"]
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        control = data["control"]
        for i, r in enumerate(rows):
            tag = r["tag"] or ""
            peak = r.get(f"act_{tag}") if tag in data["categories"] else None
            spec = "only here" if r.get("silent_elsewhere") else _num(r.get("specificity"))
            cells = [(str(r["latent"]), r["latent"]), (tag, tag), (spec, r.get("specificity") or 1e300),
                     (r.get("class") or "", r.get("class") or ""),
                     (_num(r.get("relative_norm")), r.get("relative_norm") or -1.0),
                     (_num(peak), peak if peak is not None else -1.0),
                     (_num(r.get(f"act_{control}")), r.get(f"act_{control}") or 0.0)]
            for c, (text, key) in enumerate(cells):
                item = _SortItem(text)
                item.setData(Qt.ItemDataRole.UserRole, key)
                if isinstance(key, (int, float)):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 3 and text in CLASS_COLOURS:
                    item.setForeground(QColor(CLASS_COLOURS[text]))
                self.table.setItem(i, c, item)
        # By tag; within a tag core's order (falling specificity) stays, as Qt's sort is stable.
        self.table.horizontalHeader().setSortIndicator(1, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        parts = []
        for tag, d in data["counts"].items():
            by_class = ", ".join(f"{c} {n}" for c, n in d.items() if c != "all")
            parts.append(f"<b>{html.escape(tag)}</b> {d['all']}" + (f" ({by_class})" if by_class else ""))
        n_texts = ", ".join(f"{k} {v}" for k, v in data["n_texts"].items())
        self.counts.setText((" · ".join(parts) or "No latent is specific to a category.")
                            + f"<br><span style='color:#606060'>Texts per set: {html.escape(n_texts)}. A latent is "
                              f"tagged when its mean per-text peak on a set is at least {data['ratio']:g}× that on "
                              f"every other set and it fires in at least {data['min_fraction']:g} of the set's texts.</span>")
        self.stack.show_content()

    def _activated(self, row: int, _col: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.latent_activated.emit(int(item.text()))

    def write_csv(self, path) -> Path:
        if self.data is None:
            raise ValueError("No reasoning tags to export.")
        path = Path(path)
        rows = self.data["rows"]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(keys)
            for r in rows:
                w.writerow(["" if r.get(k) is None else r.get(k) for k in keys])
        return path


class GeometryPanel(QWidget):
    """Seed 003 figure 4: cumulative fraction of quadruples below each parallelogram loss, base
    against variant, for all quadruples or one function class, in full dimension or after PCA."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.data: Optional[dict] = None
        self.which = QComboBox()
        self.which.setToolTip("All quadruples, or one function class")
        self.pca = QCheckBox("after PCA to 2D")
        self.pca.setToolTip("The loss of the four words projected on the class's two principal components "
                            "(seed 003, figure 5)")
        self.which.currentIndexChanged.connect(lambda _i: self._draw())
        self.pca.toggled.connect(lambda _on: self._draw())
        self.plot = _plot(x="parallelogram loss", y="cumulative fraction of quadruples")
        self.plot.setYRange(0, 1.02, padding=0)
        self.legend = self.plot.addLegend(offset=(-5, -5), labelTextColor="#202020")
        # The variant dashed: where the two models agree, both curves stay visible.
        self.curves = [self.plot.plot([], [], pen=pg.mkPen(MODEL_COLOURS[m], width=2, style=(
            Qt.PenStyle.SolidLine, Qt.PenStyle.DashLine)[m])) for m in range(2)]
        self.note = _note()
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Quadruples:"))
        controls.addWidget(self.which)
        controls.addWidget(self.pca)
        controls.addStretch(1)
        self.stack = _waiting_panel(self, [controls, (self.plot, 1), self.note],
                                    "The parallelogram test reads analogy quadruples a : b :: c : d in "
                                    "both models' residual at the crosscoder's layer (seed 003, figure "
                                    "4). Press Geometry above.")

    def show_result(self, data: dict) -> None:
        """`data`: GeometryResult.to_json()."""
        self.data = data
        self.which.blockSignals(True)
        self.which.clear()
        self.which.addItem("all quadruples", None)
        for c in data["classes"]:
            self.which.addItem(c, c)
        self.which.blockSignals(False)
        self._draw()
        self.stack.show_content()

    def curve(self, model: str) -> tuple[list[float], list[float]]:
        """(loss, fraction) drawn for one model at the chosen class and space."""
        d = self.data
        which, space = self.which.currentData(), ("pca_2d" if self.pca.isChecked() else "full")
        key = "loss_2d_" if space == "pca_2d" else "loss_"
        values = [q[key + model] for q in d["quadruples"] if which is None or q["class"] == which]
        v = np.sort(np.asarray([x for x in values if x is not None], dtype=float))
        return v.tolist(), (np.arange(1, v.size + 1) / max(v.size, 1)).tolist()

    def _draw(self) -> None:
        d = self.data
        if d is None:
            return
        self.legend.clear()
        rows = {(r["class"], r["model"]): r for r in d["summary"]}
        which = self.which.currentData() or "all"
        medians = []
        for m, item in enumerate(self.curves):
            if m >= len(d["model_names"]):
                item.setData([], [])
                continue
            name = d["model_names"][m]
            x, y = self.curve(name)
            item.setData(x, y)
            row = rows.get((which, name), {})
            median = row.get("median_2d" if self.pca.isChecked() else "median")
            self.legend.addItem(item, f"{name}: median {_num(median)}")
            medians.append(f"{name} {_num(median)}")
        self.plot.setYRange(0, 1.02, padding=0)
        s = d.get("settings", {})
        self.note.setText(f"{which}: median loss {', '.join(medians)}. Loss = ‖(b − a) − (d − c)‖ / mean side "
                          f"length: 0 for a perfect parallelogram. Read at {s.get('hook', '')}; words in "
                          f"'{s.get('template', '')}'. Curves further left: more structured representations.")

    def write_csv(self, path) -> Path:
        if self.data is None:
            raise ValueError("No geometry to export.")
        path = Path(path)
        rows = self.data["quadruples"]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(keys)
            for r in rows:
                w.writerow(["" if r.get(k) is None else r.get(k) for k in keys])
        return path


# ---------------------------------------------------------------------------------------------
# The tab


class CrosscoderView(QWidget):
    open_requested = Signal()
    models_requested = Signal()
    analysis_requested = Signal(str)  # one of ANALYSES
    cancel_requested = Signal()
    dashboard_requested = Signal(int)  # latent
    steer_requested = Signal(int, int)  # latent, model index (whose decoder row), or OWN_ROWS
    export_requested = Signal(str)  # a key of panels()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_names = ["base", "variant"]
        self.latent_class: dict[int, str] = {}
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open Crosscoder…")
        self.open_button.setToolTip("A crosscoder folder (cfg.json + crosscoder_weights.safetensors): a crosscoder "
                                    "run's artifacts/crosscoder")
        self.open_button.clicked.connect(self.open_requested)
        self.models_button = QPushButton("Models…")
        self.models_button.setToolTip("Choose the base and variant model folders when the ones the crosscoder "
                                      "records have moved")
        self.models_button.clicked.connect(self.models_requested)
        self.export_button = QToolButton(text="Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.export_menu = QMenu(self.export_button)
        self.export_button.setMenu(self.export_menu)
        self.analysis_buttons: dict[str, QPushButton] = {}
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.open_button)
        top.addWidget(self.models_button)
        top.addWidget(self.export_button)
        actions = QHBoxLayout()
        actions.addWidget(QLabel("Analyses:"))
        for kind in ANALYSES:
            b = QPushButton(ANALYSIS_TITLES[kind])
            b.setToolTip(ANALYSIS_TIPS[kind])
            b.clicked.connect(lambda _c=False, k=kind: self.analysis_requested.emit(k))
            self.analysis_buttons[kind] = b
            actions.addWidget(b)
        self.task_label = QLabel("")
        self.task_label.setStyleSheet("color: #404040;")
        self.progress = QProgressBar()
        self.progress.setFixedWidth(200)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running analysis; what was shown before stays")
        self.cancel_button.clicked.connect(self.cancel_requested)
        actions.addStretch(1)
        actions.addWidget(self.task_label)
        actions.addWidget(self.progress)
        actions.addWidget(self.cancel_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)

        self.lists = ListsPanel()
        self.rel_hist = HistogramPanel("Relative decoder norm  ‖d_variant‖ / (‖d_base‖ + ‖d_variant‖)",
                                       "relative decoder norm (0: base only, 1: variant only)",
                                       lines=(0.1, 0.3, 0.7, 0.9), log=True)
        self.cos_hist = HistogramPanel("Decoder cosine of shared latents, base vs variant",
                                       "cosine of the two decoder directions")
        overview = QSplitter(Qt.Orientation.Vertical)
        overview.addWidget(self.rel_hist)
        overview.addWidget(self.cos_hist)
        overview.setSizes([340, 260])
        overview.setChildrenCollapsible(False)
        self.dashboard = DashboardPanel()
        self.ablation = AblationPanel()
        self.reasoning = ReasoningPanel()
        self.geometry_panel = GeometryPanel()
        self.right = QTabWidget()
        self.right.addTab(overview, "Histograms")
        self.right.addTab(self.dashboard, "Dashboard")
        self.right.addTab(self.ablation, "Ablation")
        self.right.addTab(self.reasoning, "Reasoning")
        self.right.addTab(self.geometry_panel, "Geometry")
        body = QSplitter(Qt.Orientation.Horizontal)
        body.addWidget(self.lists)
        body.addWidget(self.right)
        body.setSizes([530, 740])
        body.setChildrenCollapsible(False)
        content = QWidget()
        content_layout = QVBoxLayout(content)
        content_layout.setContentsMargins(0, 0, 0, 0)
        content_layout.addLayout(actions)
        content_layout.addWidget(self.status)
        content_layout.addWidget(body, 1)
        self.stack = Placeholder(content, "Open a crosscoder (Model ▸ Open Crosscoder…): the folder a crosscoder "
                                          "run writes to its artifacts/crosscoder. The lists, histograms and "
                                          "dashboards of its latents appear here.")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 4)
        layout.addLayout(top)
        layout.addWidget(self.stack, 1)

        for title, key in (("Relative-norm histogram…", "relative-norm"), ("Cosine histogram…", "cosine"),
                           ("Latent lists…", "lists"), ("Dashboard…", "dashboard"), ("Ablation…", "ablation"),
                           ("Reasoning tags…", "reasoning"), ("Geometry…", "geometry")):
            self.export_menu.addAction(title, lambda k=key: self.export_requested.emit(k))
        for view in self.lists.lists.values():
            view.activated.connect(lambda index, v=view: self._open_row(v, index))
            view.selectionModel().currentChanged.connect(self._selection_changed)
        self.lists.tabs.currentChanged.connect(self._selection_changed)
        self.lists.dashboard_button.clicked.connect(self._open_selected)
        self.lists.steer_button.clicked.connect(lambda: self._steer(None))
        self.lists.steer_button.setEnabled(False)
        self.lists.dashboard_button.setEnabled(False)
        self.dashboard.steer_requested.connect(self.steer_requested)
        self.reasoning.latent_activated.connect(self.dashboard_requested)
        QShortcut(QKeySequence("Ctrl+L"), self, self.lists.filter.setFocus)
        self.set_model_names(self.model_names)
        self.set_busy("", False)
        self.set_loaded(False)

    # ------------------------------------------------------------------ state

    def panels(self) -> dict[str, QWidget]:
        """What Export can write, by key (each has write_csv; a PNG is a grab of it)."""
        return {"relative-norm": self.rel_hist, "cosine": self.cos_hist, "lists": self.lists,
                "dashboard": self.dashboard, "ablation": self.ablation, "reasoning": self.reasoning,
                "geometry": self.geometry_panel}

    def set_model_names(self, names: list[str]) -> None:
        self.model_names = list(names)
        self.dashboard.set_model_names(names)
        menu = self.lists.steer_menu
        menu.clear()
        menu.addAction("Each model its own decoder row", lambda: self._steer(None))
        for m, name in enumerate(names[:2]):
            menu.addAction(f"Only {name}'s decoder row, for {name}", lambda m=m: self._steer(m))

    def set_loaded(self, loaded: bool) -> None:
        for b in self.analysis_buttons.values():
            b.setEnabled(loaded and not self.cancel_button.isVisible())
        self.models_button.setEnabled(loaded)
        self.export_button.setEnabled(loaded)
        self._loaded = loaded

    def set_busy(self, message: str, busy: bool) -> None:
        self.task_label.setText(message)
        for w in (self.task_label, self.progress, self.cancel_button):
            w.setVisible(busy)
        if busy:
            self.progress.setRange(0, 0)
        for b in self.analysis_buttons.values():
            b.setEnabled(getattr(self, "_loaded", False) and not busy)

    def show_progress(self, done: int, total: int, message: str) -> None:
        if message:
            self.task_label.setText(message)
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def show_message(self, message: str) -> None:
        self.stack.show_message(message)

    def show_status(self, text: str, error: bool = False) -> None:
        safe = html.escape(text)
        self.status.setText(f'<span style="color:#b00020">{safe}</span>' if error else safe)

    def show_crosscoder(self, summary_html: str, report: dict, lists: dict[str, list[dict]]) -> None:
        """`report`: core.crosscoder.norm_report(...) of the crosscoder."""
        self.summary.setText(summary_html)
        self.latent_class = {j: c for j, c in enumerate(report["class"])}
        counts, t = report["counts"], report["thresholds"]
        h = report["relative_norm_histogram"]
        edges = h["edges"]
        colours = [CLASS_COLOURS[_class_of((edges[i] + edges[i + 1]) / 2, t)] for i in range(len(h["counts"]))]
        key = " · ".join(f'<b style="color:{CLASS_COLOURS[c]}">■</b> {c} <b>{counts[c]:,}</b>'
                         for c in ("base-only", "base-leaning", "shared", "variant-leaning", "variant-only"))
        key += (f' · dead <b>{counts["dead"]:,}</b> (not plotted)<br><span style="color:#606060">Dashed lines: '
                f'base-only &lt; {t["base_only_below"]:g}, shared {t["shared_from"]:g}..{t["shared_to"]:g}, '
                f'variant-only &gt; {t["variant_only_above"]:g}.</span>')
        for line, x in zip(self.rel_hist.lines, (t["base_only_below"], t["shared_from"], t["shared_to"],
                                                 t["variant_only_above"])):
            line.setValue(x)
        self.rel_hist.set_histogram(edges, h["counts"], colours, key, "no live latents")
        c = report["cosine_histogram"]
        n_shared = counts["shared"]
        cos = [report["cosine"][j] for j, k in enumerate(report["class"]) if k == "shared"]
        median = f", median {float(np.median(cos)):.2f}" if cos else ""
        self.cos_hist.set_histogram(c["edges"], c["counts"], [CLASS_COLOURS["shared"]] * len(c["counts"]),
                                    f"{n_shared:,} shared latents{median}. Near 1: the latent means the same in "
                                    "both models; low or negative: the variant turned it.", "no shared latents")
        self.set_lists(lists)
        self.stack.show_content()
        self.set_loaded(True)

    def set_lists(self, lists: dict[str, list[dict]], note: str = "") -> None:
        for i, key in enumerate(LISTS):
            self.lists.lists[key].set_rows(lists.get(key, []))
            self.lists.tabs.setTabText(i, f"{LIST_TITLES[key]} ({len(lists.get(key, [])):,})")
        if note:
            self.lists.note.setText(note)
        first = not getattr(self, "_sorted", False)
        if first:  # the natural order once; later the user's sorting stays
            self.lists.lists["variant-only"].sortByColumn(1, Qt.SortOrder.DescendingOrder)
            self.lists.lists["base-only"].sortByColumn(1, Qt.SortOrder.AscendingOrder)
            self.lists.lists["shared"].sortByColumn(3, Qt.SortOrder.DescendingOrder)
            self._sorted = True
        self._selection_changed()

    def selected_latent(self) -> Optional[int]:
        return self.lists.current().current_latent()

    def select_latent(self, latent: int) -> bool:
        """Show `latent` selected in the list of its class (if it is in one)."""
        for i, key in enumerate(LISTS):
            if self.lists.lists[key].select_latent(latent):
                self.lists.tabs.setCurrentIndex(i)
                return True
        return False

    def owner(self, latent: int) -> int:
        """The model whose decoder row steering uses by default: the base for base-leaning latents."""
        return 0 if self.latent_class.get(latent, "") in ("base-only", "base-leaning") else 1

    # ------------------------------------------------------------------ internals

    def _selection_changed(self, *_args) -> None:
        j = self.selected_latent()
        self.lists.dashboard_button.setEnabled(j is not None)
        self.lists.steer_button.setEnabled(j is not None)
        if j is not None:
            self.lists.steer_button.setText(f"Steer with latent {j}")
        else:
            self.lists.steer_button.setText("Steer with this latent")

    def _open_row(self, view: LatentList, index: QModelIndex) -> None:
        if index.isValid():
            self.dashboard_requested.emit(int(view.proxy.data(view.proxy.index(index.row(), 0))))

    def _open_selected(self) -> None:
        j = self.selected_latent()
        if j is not None:
            self.dashboard_requested.emit(j)

    def _steer(self, model: Optional[int]) -> None:
        """model None (the button): each model steered with its own decoder row (OWN_ROWS)."""
        j = self.selected_latent()
        if j is not None:
            self.steer_requested.emit(j, OWN_ROWS if model is None else model)


def _class_of(rel: float, t: dict) -> str:
    if rel < t["base_only_below"]:
        return "base-only"
    if rel > t["variant_only_above"]:
        return "variant-only"
    if t["shared_from"] <= rel <= t["shared_to"]:
        return "shared"
    return "base-leaning" if rel < t["shared_from"] else "variant-leaning"


def dashboard_title(dash_latent: int, d_latent: int, latent_class: str, rel, cos) -> str:
    colour = CLASS_COLOURS.get(latent_class, "#404040")
    return (f"Latent {dash_latent} <span style='color:#808080; font-weight:400'>of {d_latent:,}</span> · "
            f"<span style='color:{colour}'>{html.escape(latent_class)}</span> · "
            f"<span style='font-weight:400'>rel. norm {_num(rel)} · cosine {_num(cos, 2)}</span>")
