"""Search features: by label text ("negation") or by token ("which features fire on ' because'").

A non-modal dialog: the query box, the two kinds of search, a results table; double-click or
Enter opens the feature's dashboard. The session (gui/feature_session.py) runs the search (label
search on the GUI thread, token search on the inspector thread: it needs the tokenizer and the
feature index) and calls `show_results`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QDialog, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QRadioButton, QTableWidget, QTableWidgetItem, QVBoxLayout)

MODES = {"label": "Label text", "token": "Token"}


@dataclass(frozen=True)
class SearchHit:
    feature: int
    label: str
    value: Optional[float] = None  # token search: specificity score (core TokenHit.score)
    note: str = ""  # token search: which token ("' because'", 12 occurrences)


class FeatureSearch(QDialog):
    search_requested = Signal(str, str)  # mode, text
    feature_chosen = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Search Features")
        self.setModal(False)
        self.resize(560, 480)
        self.hits: list[SearchHit] = []
        self.query = QLineEdit()
        self.query.setClearButtonEnabled(True)
        self.query.textChanged.connect(lambda _t: self._timer.start())
        self.query.returnPressed.connect(self._enter)
        self.mode_group = QButtonGroup(self)
        modes = QHBoxLayout()
        modes.addWidget(QLabel("Search by:"))
        for i, (key, text) in enumerate(MODES.items()):
            button = QRadioButton(text)
            button.setProperty("mode", key)
            self.mode_group.addButton(button, i)
            modes.addWidget(button)
        modes.addStretch(1)
        self.mode_group.button(0).setChecked(True)
        self.mode_group.idToggled.connect(lambda _id, on: on and self._mode_changed())
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["feature", "specificity", "label"])
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(lambda row, _c: self._choose(row))
        self.table.cellActivated.connect(lambda row, _c: self._choose(row))
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #606060;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.query)
        layout.addLayout(modes)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        self._timer = QTimer(self, singleShot=True, interval=250)
        self._timer.timeout.connect(self._search)
        self._mode_changed()

    @property
    def mode(self) -> str:
        return self.mode_group.checkedButton().property("mode")

    def set_mode(self, mode: str) -> None:
        for button in self.mode_group.buttons():
            if button.property("mode") == mode:
                button.setChecked(True)

    def search(self, text: str, mode: Optional[str] = None) -> None:
        """Run a search as if typed (for the menu, scripts and tests)."""
        if mode:
            self.set_mode(mode)
        self.query.blockSignals(True)
        self.query.setText(text)
        self.query.blockSignals(False)
        self._search()

    def show_results(self, hits: list[SearchHit], note: str = "") -> None:
        self.hits = list(hits)
        self.table.setRowCount(len(hits))
        token = self.mode == "token"
        self.table.setColumnHidden(1, not token)
        for i, hit in enumerate(hits):
            cells = [QTableWidgetItem(f"f{hit.feature}"),
                     QTableWidgetItem("" if hit.value is None else f"{hit.value:.3g}"),
                     QTableWidgetItem(hit.label or "(no label)")]
            if not hit.label:
                cells[2].setForeground(Qt.GlobalColor.gray)
            cells[1].setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for col, item in enumerate(cells):
                item.setToolTip((hit.note + "\n" if hit.note else "") + "Double-click or Enter: open its dashboard")
                self.table.setItem(i, col, item)
        if hits:
            self.table.selectRow(0)
        self.status.setText(note)

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def _mode_changed(self) -> None:
        if self.mode == "label":
            self.query.setPlaceholderText("Words in a feature's label, e.g. because")
        else:
            self.query.setPlaceholderText("A token as it appears mid-text, e.g. ' because' (quotes keep the space)")
        self._search()

    def _search(self) -> None:
        self._timer.stop()
        self.search_requested.emit(self.mode, self.query.text())

    def _enter(self) -> None:
        if self._timer.isActive() or not self.hits:
            self._search()
        else:
            self._choose(max(self.table.currentRow(), 0))

    def _choose(self, row: int) -> None:
        if 0 <= row < len(self.hits):
            self.feature_chosen.emit(self.hits[row].feature)
