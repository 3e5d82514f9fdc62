"""The "most similar documents" table: rank, cosine (with a bar), label, id and a text snippet."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Optional

from PySide6.QtCore import QModelIndex, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QMenu, QSizePolicy,
                               QStyledItemDelegate, QTableView, QVBoxLayout, QWidget)

from core.documents import snippet
from gui.style import Placeholder, TagDelegate
from gui.table_model import ListTableModel


@dataclass(frozen=True)
class Neighbour:
    rank: int
    cosine: float
    label: str
    doc_id: str
    text: str
    corpus_index: int


class NeighboursModel(ListTableModel):
    COLUMNS = ("#", "Cosine", "Label", "ID", "Text")

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (str(row.rank), f"{row.cosine:.3f}", row.label, row.doc_id, snippet(row.text))[col]
        if role == Qt.ItemDataRole.UserRole:  # raw value, for the bar delegate and tests
            return row.cosine
        if role == Qt.ItemDataRole.TextAlignmentRole and col < 2:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{row.doc_id} ({row.label or 'no label'}) · cosine {row.cosine:.4f}\n\n{snippet(row.text, 500)}"
        return None


class CosineDelegate(QStyledItemDelegate):
    """The cosine as a number over a bar from 0 to 1 (negative cosines draw no bar)."""

    def paint(self, painter: QPainter, option, index) -> None:
        value = index.data(Qt.ItemDataRole.UserRole) or 0.0
        painter.save()
        rect = QRectF(option.rect).adjusted(2, 4, -2, -4)
        rect.setWidth(rect.width() * max(0.0, min(1.0, value)))
        painter.fillRect(rect, QColor("#c6dbef"))
        painter.restore()
        super().paint(painter, option, index)


class NeighboursPanel(QWidget):
    activated = Signal(int)  # corpus index of a double-clicked neighbour

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = NeighboursModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(23)
        self.table.setWordWrap(False)
        self.table.setItemDelegateForColumn(1, CosineDelegate(self.table))
        self.table.setItemDelegateForColumn(2, TagDelegate(self.table))
        header = self.table.horizontalHeader()
        for col, width in enumerate((34, 70, 90, 100)):
            self.table.setColumnWidth(col, width)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        header.setStretchLastSection(True)
        self.table.doubleClicked.connect(self._double_clicked)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.header = QLabel("Most similar documents")
        self.header.setStyleSheet("font-weight: 600; font-size: 11pt;")
        self.header.setTextFormat(Qt.TextFormat.PlainText)
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.note = QLabel()
        self.note.setStyleSheet("color: #606060;")
        self.note.setWordWrap(True)  # a long note must not widen the column
        self.stack = Placeholder(self.table, "Open a document to see its nearest neighbours.")
        self.export_requested = None  # set by the window: callable that asks for a path

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.note)

    def show_message(self, message: str, header: str = "Most similar documents") -> None:
        self.model.set_rows([])
        self.header.setText(header)
        self.note.setText("")
        self.stack.show_message(message)

    def show_rows(self, rows: list[Neighbour], header: str, note: str = "") -> None:
        self.model.set_rows(rows)
        self.header.setText(header)
        self.note.setText(note)
        self.stack.show_content()

    def write_csv(self, path: str) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["rank", "cosine", "label", "id", "text"])
            for r in self.model.rows:
                writer.writerow([r.rank, f"{r.cosine:.6f}", r.label, r.doc_id, r.text])

    def _double_clicked(self, index: QModelIndex) -> None:
        if index.isValid():
            self.activated.emit(self.model.rows[index.row()].corpus_index)

    def _context_menu(self, pos) -> None:
        menu = QMenu(self)
        index: Optional[QModelIndex] = self.table.indexAt(pos)
        if index is not None and index.isValid():
            row = self.model.rows[index.row()]
            menu.addAction(f"Open {row.doc_id}", lambda: self.activated.emit(row.corpus_index))
        export = menu.addAction("Export as CSV…", lambda: self.export_requested and self.export_requested())
        export.setEnabled(bool(self.model.rows))
        menu.exec(self.table.viewport().mapToGlobal(pos))
