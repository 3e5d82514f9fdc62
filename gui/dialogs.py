"""Small windows: the paste dialog and the (non-modal) problems dock."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QDockWidget, QFormLayout,
                               QHeaderView, QLabel, QLineEdit, QMessageBox, QPlainTextEdit,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from core.documents import Problem


def show_error_box(parent: QWidget, what: str, hint: str = "") -> QMessageBox:
    """A warning that does not block the event loop (open(), not exec()); deleted on close."""
    box = QMessageBox(QMessageBox.Icon.Warning, "distillscope", what, QMessageBox.StandardButton.Ok, parent)
    if hint:
        box.setInformativeText(hint)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box


def export_view(window, view, title: str, default_name: str, path: str = "") -> str:
    """Export a tab: its data as CSV (view.write_csv) or a PNG of it, by file suffix; asks for
    the file when `path` is empty. Returns the path written ("" when the dialog was cancelled)."""
    from PySide6.QtWidgets import QFileDialog

    if not path:
        path, _ = QFileDialog.getSaveFileName(view, title, default_name, "CSV (*.csv);;PNG image (*.png)")
        if not path:
            return ""
    if path.lower().endswith(".png"):
        view.grab().save(path)
    else:
        view.write_csv(path)
    window._set_status(f"Wrote {path}")
    return path


class PasteDialog(QDialog):
    """A text box and an optional label; OK is enabled once there is some text."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Paste Text")
        self.resize(640, 420)
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("Paste or type the text of a document here.")
        self.label = QLineEdit()
        self.label.setPlaceholderText("optional, e.g. the topic or the source")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Add Document")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.text.textChanged.connect(self._update_ok)
        form = QFormLayout()
        form.addRow("Label:", self.label)
        hint = QLabel("The document is inspected on its own and compared with the open corpus; "
                      "it is not added to the corpus.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #606060;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addLayout(form)
        layout.addWidget(hint)
        layout.addWidget(self.buttons)
        self._update_ok()

    def _update_ok(self) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(bool(self.text.toPlainText().strip()))

    def values(self) -> tuple[str, str | None]:
        return self.text.toPlainText(), (self.label.text().strip() or None)


class ProblemsDock(QDockWidget):
    """Every problem met while loading documents, as a sortable table; never steals focus."""

    def __init__(self, parent=None):
        super().__init__("Problems", parent)
        self.setObjectName("problems")
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Source", "Line", "Message"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(False)  # one line per problem; the tooltip has the whole message
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.setColumnWidth(0, 300)
        self.summary = QLabel()
        self.summary.setStyleSheet("color: #8a4b00;")
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(6, 4, 6, 6)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        self.setWidget(body)
        self.problems: list[Problem] = []

    def set_problems(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(problems))
        for row, p in enumerate(problems):
            source = QTableWidgetItem(p.source)
            source.setToolTip(p.source)
            line = QTableWidgetItem()
            if p.line is not None:
                line.setData(Qt.ItemDataRole.DisplayRole, p.line)
            message = QTableWidgetItem(p.message)
            message.setToolTip(p.message)
            for col, item in enumerate((source, line, message)):
                self.table.setItem(row, col, item)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # stable: a file's lines stay in order
        n = len(problems)
        self.summary.setText(f"{n} problem{'s' if n != 1 else ''} while loading documents. "
                             "The other documents loaded normally." if n else "No problems.")
