"""The Agreement tab: how close the open student is to its teacher (seed 000), as a table beside
the seed's numbers and as plots: per-document histograms of cosine, feature-score correlation and
top-k overlap for each set of documents, and the contrast's held-out ROC in both spaces; and, per
set, the documents where the student reads least like its teacher (double-click: open in Inspect,
teacher and student bars side by side).

Plain data in (the dict of core.student.evaluation.AgreementEvaluation.to_json), signals out;
gui/agreement_session.py runs the evaluation on a worker.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout,
                               QWidget)

from core.documents import snippet
from gui.contrast_view import roc_plot

SET_COLOURS = {"id": "#0072B2", "contrast": "#E69F00", "ood": "#D55E00"}  # Okabe-Ito
OTHER_COLOUR = "#009E73"
SPACE_COLOURS = {"teacher": "#0072B2", "student": "#E69F00"}
NEAR = 0.05  # within this of the seed's value counts as "near" (green)
WORST_ROWS = 100  # documents listed per set, lowest cosine first
# (per-document key, plot title, x label)
PLOTS = (("cosines", "Cosine, teacher vs student", "cosine of z-normalized vectors"),
         ("correlations", "Feature-score correlation", "Pearson r over all features"),
         ("overlaps", "Top-k feature overlap", "shared top-k features / k"))


def _colour(key: str) -> str:
    return SET_COLOURS.get(key, OTHER_COLOUR)


def set_rows(s: dict) -> list[tuple[str, Optional[float], Optional[float], Optional[float]]]:
    """(metric, ours, seed, chance) rows of one set; files saved before the chance column
    have three entries a row."""
    return [(*row, None)[:4] for row in s["rows"]]


def table_rows(data: dict) -> list[tuple[str, str, Optional[float], Optional[float], Optional[float]]]:
    """(set title, metric, ours, seed, chance) for every number, set by set."""
    return [(s["title"], *row) for s in data["sets"].values() for row in set_rows(s)]


class AgreementView(QWidget):
    evaluate_requested = Signal()
    export_requested = Signal()
    document_requested = Signal(str, str)  # set key, document id: open it in Inspect

    def __init__(self, parent=None):
        super().__init__(parent)
        self.data: Optional[dict] = None
        self.evaluation = None  # `data` parsed (core.student.evaluation.AgreementEvaluation)
        self.documents: dict = {}  # set key -> {document id: Document}, once the session has read them
        self.summary = QLabel("Open a student (Model > Open Student, Ctrl+Shift+S) to see how closely it "
                              "agrees with its teacher.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setToolTip("Compare the student with the teacher on its held-out documents, the "
                                        "provenance demo and the out-of-distribution demo (Ctrl+E)")
        self.evaluate_button.setShortcut("Ctrl+E")
        self.evaluate_button.setEnabled(False)
        self.evaluate_button.clicked.connect(self.evaluate_requested)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("The table and every per-document value as CSV, or a PNG of this tab")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self.export_requested)
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.evaluate_button)
        top.addWidget(self.export_button)

        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Metric", "Student", "Seed 000", "Chance"])
        self.table.horizontalHeaderItem(1).setToolTip("The student's agreement with its teacher")
        self.table.horizontalHeaderItem(3).setToolTip(
            "Chance: each teacher document against the student vector of another document of the "
            "same set. Shared structure of the set (high out of distribution) scores here too.")
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in (1, 2, 3):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        # One colour per set of documents, shared by the table's set rows and every histogram.
        self.key = QLabel("")
        self.key.setWordWrap(True)

        grid = QWidget()
        plots = QGridLayout(grid)
        plots.setContentsMargins(0, 0, 0, 0)
        self.plots: dict[str, pg.PlotWidget] = {}
        for n, (key, title, xlabel) in enumerate(PLOTS):
            w = pg.PlotWidget(background="w", title=title)
            w.setLabel("bottom", xlabel)
            w.setLabel("left", "fraction of documents")
            w.setMouseEnabled(False, False)
            w.getAxis("left").enableAutoSIPrefix(False)
            self.plots[key] = w
            plots.addWidget(w, n // 2, n % 2)
        self.roc = roc_plot("Contrast ROC, held-out documents")
        self.roc.addLegend(offset=(-5, -5))
        plots.addWidget(self.roc, 1, 1)

        self.left_tabs = QTabWidget()
        self.left_tabs.addTab(self.table, "Numbers")
        self.left_tabs.addTab(self._build_worst(), "Least agreeing documents")
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.left_tabs, 1)
        left_layout.addWidget(self.key)
        body = QSplitter(Qt.Orientation.Horizontal)
        body.addWidget(left)
        body.addWidget(grid)
        body.setSizes([520, 740])
        body.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(body, 1)

    def _build_worst(self) -> QWidget:
        """Per set, its documents from the lowest cosine up: where to look for what the student
        misses."""
        self.worst_set = QComboBox()
        self.worst_set.setToolTip("The set of documents to list")
        self.worst_set.currentIndexChanged.connect(lambda _i: self._fill_worst())
        self.worst = QTableWidget(0, 5)
        self.worst.setHorizontalHeaderLabels(["Document", "Cosine", "r", "Overlap", "Text"])
        self.worst.setToolTip("Double-click or press Enter to open the document in Inspect, with the "
                              "teacher's and the student's features side by side")
        self.worst.verticalHeader().setVisible(False)
        self.worst.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.worst.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.worst.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.worst.setWordWrap(False)
        header = self.worst.horizontalHeader()
        for c in range(4):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.worst.cellDoubleClicked.connect(lambda row, _col: self._request(row))
        self.worst.activated.connect(lambda index: self._request(index.row()))
        hint = QLabel("Lowest cosine first. Double-click (or Enter) opens a document in Inspect with "
                      "the teacher's and the student's features side by side.")
        hint.setWordWrap(True)
        choose = QHBoxLayout()
        choose.addWidget(QLabel("Set:"))
        choose.addWidget(self.worst_set, 1)
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(choose)
        layout.addWidget(hint)
        layout.addWidget(self.worst, 1)
        return box

    # ------------------------------------------------------------------ state

    def set_student(self, name: str, can_evaluate: bool, why_not: str = "") -> None:
        self.evaluate_button.setEnabled(can_evaluate)
        self.evaluate_button.setToolTip(why_not or self.evaluate_button.toolTip())
        if self.data is None:
            self.summary.setText(f"<b>{name}</b>: not evaluated yet. " + (why_not or "Press Evaluate (Ctrl+E).")
                                 if name else "Open a student (Model > Open Student, Ctrl+Shift+S) to see "
                                 "how closely it agrees with its teacher.")

    def show_busy(self, message: str) -> None:
        self.summary.setText(message)

    def show_error(self, message: str) -> None:
        self.summary.setText(f'<span style="color:#b00020">{message}</span>')

    def clear(self) -> None:
        self.data = self.evaluation = None
        self.documents = {}
        self.table.setRowCount(0)
        self.worst.setRowCount(0)
        self.worst_set.blockSignals(True)
        self.worst_set.clear()
        self.worst_set.blockSignals(False)
        self.key.setText("")
        for w in list(self.plots.values()) + [self.roc]:
            w.clear()
        self.roc.plotItem.legend.clear()
        self.export_button.setEnabled(False)

    def show_result(self, data: dict) -> None:
        from core.student.evaluation import AgreementEvaluation

        self.clear()
        self.data, self.evaluation = data, AgreementEvaluation.from_json(data)
        sets = data["sets"]
        n_docs = ", ".join(f"{s['n_documents']:,}" for s in sets.values())
        self.summary.setText(
            f"<b>{data['student']}</b> against {data['teacher']} at {data['hook']}; features of the "
            f"dictionary {data['dictionary']}. Documents per set: {n_docs}. Green: at or within {NEAR} of the "
            f"seed's value. Chance: each teacher vector against another document's student vector. "
            f"Evaluated in {data.get('seconds', 0):.0f} s.")
        self._fill_table(data)
        self.worst_set.blockSignals(True)
        for key, s in sets.items():
            self.worst_set.addItem(f"{_short(s['title'])} ({s['n_documents']:,})", key)
        self.worst_set.blockSignals(False)
        self._fill_worst()
        self.key.setText("Histograms: " + " · ".join(
            f'<b style="color:{_colour(k)}">■ {_short(s["title"])}</b>' for k, s in sets.items())
            + "; dashed: the seed's mean for that set.")
        for key, _, _ in PLOTS:
            self._histograms(self.plots[key], sets, key)
        self._roc(sets)
        self.export_button.setEnabled(True)

    def _fill_table(self, data: dict) -> None:
        """A bold row per set of documents (in its histogram colour), its metrics below."""
        self.table.setRowCount(0)
        for key, s in data["sets"].items():
            r = self.table.rowCount()
            self.table.insertRow(r)
            seen = f", {s['seen_in_training']:,} seen in training" if s.get("seen_in_training") else ""
            title = QTableWidgetItem(f"{s['title']}: {s['n_documents']:,} documents{seen}")
            font = title.font()
            font.setBold(True)
            title.setFont(font)
            title.setForeground(QBrush(QColor(_colour(key))))
            self.table.setItem(r, 0, title)
            self.table.setSpan(r, 0, 1, 4)
            for metric, ours, seed, chance in set_rows(s):
                r = self.table.rowCount()
                self.table.insertRow(r)
                cells = [f"   {metric}", f"{ours:.3f}" if ours is not None else "–",
                         f"{seed:.2f}" if seed is not None else "", f"{chance:.3f}" if chance is not None else ""]
                for c, text in enumerate(cells):
                    item = QTableWidgetItem(text)
                    if c >= 1:
                        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    if c == 1 and seed is not None and ours is not None:
                        good = ours >= seed - NEAR
                        item.setForeground(QBrush(QColor("#1b7f3b" if good else "#b35900")))
                        item.setToolTip(f"{ours - seed:+.3f} against the seed's {seed:.2f}")
                    self.table.setItem(r, c, item)

    def set_documents(self, documents: dict) -> None:
        """{set key: {document id: Document}}: fills the Text column of the least-agreeing list."""
        self.documents = documents
        self._fill_worst()

    def _report(self, key):
        return self.evaluation.reports.get(key) if self.evaluation is not None else None

    def worst_rows(self, key: str) -> list[tuple[str, float, float, float]]:
        """(id, cosine, r, overlap) of set `key`'s least agreeing documents, as listed."""
        report = self._report(key)
        return report.worst(WORST_ROWS) if report is not None else []

    def _fill_worst(self) -> None:
        key = self.worst_set.currentData()
        rows = self.worst_rows(key)
        has_ids = bool(getattr(self._report(key), "ids", None))
        documents = self.documents.get(key, {})
        self.worst.setRowCount(len(rows))
        for r, (doc, cosine, corr, overlap) in enumerate(rows):
            text = documents[doc].text if doc in documents else None
            cells = [doc, f"{cosine:.3f}", f"{corr:.3f}", f"{overlap:.2f}",
                     snippet(text, 200) if text is not None else ("" if has_ids else "evaluate again to name "
                                                                  "the documents")]
            for c, value in enumerate(cells):
                item = QTableWidgetItem(value)
                if 1 <= c <= 3:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 4 and text is not None:
                    item.setToolTip(snippet(text, 600))
                self.worst.setItem(r, c, item)

    def _request(self, row: int) -> None:
        key, item = self.worst_set.currentData(), self.worst.item(row, 0)
        if item is not None and getattr(self._report(key), "ids", None):
            self.document_requested.emit(key, item.text())

    def _histograms(self, plot: pg.PlotWidget, sets: dict, key: str) -> None:
        """One outline histogram per set (fractions, so sets of any size compare), and a dashed
        line at each seed value the sets are compared with."""
        values = {k: np.asarray(s[key], dtype=float) for k, s in sets.items() if len(s[key])}
        if not values:
            return
        both = np.concatenate(list(values.values()))
        bins = (np.linspace(-0.025, 1.025, 22) if key == "overlaps"
                else np.linspace(min(-0.2, both.min()), max(1.0, both.max()), 25))
        for set_key, v in values.items():
            counts, _ = np.histogram(v, bins=bins)
            plot.plot(bins, counts / len(v), stepMode="center", pen=pg.mkPen(_colour(set_key), width=2))
        seeds = {}
        for set_key in values:
            seed = (sets[set_key].get("seed") or {}).get(key)
            if seed is not None:
                seeds.setdefault(seed, set_key)
        for n, (seed, set_key) in enumerate(seeds.items()):
            where = "ID" if sets[set_key]["in_distribution"] else "OOD"
            # Labels left of their lines, but the highest's right of it when it has room there
            # (the x axes end at about 1): two labels never cover each other.
            side = (0, 0.5) if seed == max(seeds) and seed <= 0.7 else (1, 0.5)
            plot.addItem(pg.InfiniteLine(seed, angle=90, pen=pg.mkPen(_colour(set_key), style=Qt.PenStyle.DashLine),
                                         label=f"seed {where} {seed:.2f}",
                                         labelOpts={"position": 0.93 - 0.1 * n, "color": "#404040",
                                                    "anchors": [side, side]}))

    def _roc(self, sets: dict) -> None:
        self.roc.plot([0, 1], [0, 1], pen=pg.mkPen("#b0b0b0", style=Qt.PenStyle.DashLine))
        for s in sets.values():
            for space, curve in (s.get("roc") or {}).items():
                auc = s.get(f"auc_{space}")
                self.roc.plot(curve[0], curve[1], pen=pg.mkPen(SPACE_COLOURS.get(space, OTHER_COLOUR), width=2),
                              name=f"{space}: AUC {auc:.3f}" if auc is not None else space)
                self.roc.setTitle(f"Held-out ROC: {s.get('contrast', '')}")

    # ------------------------------------------------------------------ export

    def write_csv(self, path: str | Path) -> Path:
        """The table rows, then every per-document value, in one file with a `kind` column."""
        data, path = self.data, Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["kind", "documents", "metric", "value", "seed", "chance", "document"])
            for title, metric, ours, seed, chance in table_rows(data):
                w.writerow(["table", title, metric, "" if ours is None else f"{ours:.6g}",
                            "" if seed is None else f"{seed:.2f}", "" if chance is None else f"{chance:.6g}"])
            for s in data["sets"].values():
                ids = s.get("ids") or []  # files saved before ids were kept have none
                for key in ("cosines", "correlations", "overlaps"):
                    for i, v in enumerate(s[key]):
                        w.writerow(["document", s["title"], key[:-1], f"{float(v):.6g}", "", "",
                                    ids[i] if i < len(ids) else ""])
        return path


def _short(title: str) -> str:
    """'held-out 'demo' documents (in distribution)' -> 'held-out 'demo' documents'."""
    return title.split(" (")[0]
