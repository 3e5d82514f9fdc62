"""Left side of the window: the open documents (filterable table) and the selected one's text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from PySide6.QtCore import (QItemSelectionModel, QModelIndex,
                            QSortFilterProxyModel, Qt, Signal)
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QLineEdit, QPlainTextEdit,
                               QSizePolicy, QTableView, QVBoxLayout, QWidget)

from core.documents import Document, snippet
from gui.style import Placeholder, TagDelegate, titled_split
from gui.table_model import ListTableModel

FILTER_ROLE = Qt.ItemDataRole.UserRole + 1


@dataclass(frozen=True)
class Entry:
    """A row of the list: a document and its index in the corpus (None: pasted, not in it)."""

    doc: Document
    corpus_index: Optional[int]


class DocumentsModel(ListTableModel):
    COLUMNS = ("ID", "Label", "Text")

    @property
    def entries(self) -> list[Entry]:
        return self.rows

    def set_entries(self, entries: list[Entry]) -> None:
        self.set_rows(entries)

    def rows_changed(self) -> None:
        self._snippets = [snippet(e.doc.text) for e in self.rows]

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        entry = self.entries[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return entry.doc.id
            if col == 1:
                return entry.doc.label or ("pasted" if entry.corpus_index is None else "")
            return self._snippets[index.row()]
        if role == Qt.ItemDataRole.ToolTipRole:
            where = "pasted, not part of the corpus" if entry.corpus_index is None else entry.doc.source
            return f"{entry.doc.id} — {where}\n\n{snippet(entry.doc.text, 400)}"
        if role == FILTER_ROLE:  # the filter box searches id, label and the full text
            return f"{entry.doc.id}\n{entry.doc.label or ''}\n{entry.doc.text}"
        if role == Qt.ItemDataRole.FontRole and entry.corpus_index is None and col == 0:
            font = QFont()
            font.setItalic(True)
            return font
        return None


class DocumentsPanel(QWidget):
    """Filter box, document table and the full text of the selected document."""

    selected = Signal(int)  # row in `model.entries`, or -1 when nothing is selected

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = DocumentsModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterRole(FILTER_ROLE)
        self.proxy.setFilterKeyColumn(0)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

        self.filter = QLineEdit(placeholderText="Filter documents by id, label or text  (Ctrl+F)")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._filter_changed)

        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setItemDelegateForColumn(1, TagDelegate(self.table))
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.setWordWrap(False)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.table.setColumnWidth(0, 110)
        self.table.setColumnWidth(1, 90)
        self.table.selectionModel().currentRowChanged.connect(self._current_changed)
        self.list_view = Placeholder(self.table, "No documents open.\n\nUse File ▸ Open Files… or "
                                     "Open Folder…, paste text (Ctrl+Shift+V), or drop files here.")

        self.count = QLabel()
        self.count.setStyleSheet("color: #606060;")
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.title.setStyleSheet("font-weight: 600;")
        # A long source path is clipped rather than widening the column (the Inspect tab has three).
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.text = QPlainTextEdit(readOnly=True)
        self.text.setPlaceholderText("Select a document to read its full text.")
        # Qt's default tab stop is 80 px, which turns tab-indented texts into ragged columns.
        self.text.setTabStopDistance(4 * self.text.fontMetrics().horizontalAdvance(" "))

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.filter)
        top_layout.addWidget(self.list_view, 1)
        top_layout.addWidget(self.count)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(titled_split(top, self.title, self.text, [480, 220]))

    # ------------------------------------------------------------------ API

    def set_entries(self, entries: list[Entry]) -> None:
        self.model.set_entries(entries)
        if entries:
            self.list_view.show_content()
        else:
            self.list_view.show_message(self.list_view.label.text())
        self._update_count()
        self._show_text(-1)

    def current_row(self) -> int:
        index = self.table.currentIndex()
        return self.proxy.mapToSource(index).row() if index.isValid() else -1

    def select_row(self, row: int) -> None:
        """Select a source row, clearing the filter if it hides that row."""
        source = self.model.index(row, 0)
        index = self.proxy.mapFromSource(source)
        if not index.isValid():
            self.filter.clear()
            index = self.proxy.mapFromSource(source)
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)

    def focus_filter(self) -> None:
        self.filter.setFocus()
        self.filter.selectAll()

    # ------------------------------------------------------------------ internals

    def _filter_changed(self, text: str) -> None:
        self.proxy.setFilterFixedString(text)
        self._update_count()

    def _update_count(self) -> None:
        total, shown = self.model.rowCount(), self.proxy.rowCount()
        pasted = sum(1 for e in self.model.entries if e.corpus_index is None)
        text = f"{total:,} documents" if shown == total else f"{shown:,} of {total:,} documents shown"
        self.count.setText(text + (f" ({pasted} pasted)" if pasted else ""))

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        row = self.proxy.mapToSource(current).row() if current.isValid() else -1
        self._show_text(row)
        self.selected.emit(row)

    def _show_text(self, row: int) -> None:
        if row < 0:
            self.title.setText("")
            self.text.clear()
            return
        doc = self.model.entries[row].doc
        self.title.setText(f"{doc.id}" + (f"  ·  {doc.label}" if doc.label else "") + f"  ·  {doc.source}")
        self.text.setPlainText(doc.text)
