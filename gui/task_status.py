"""The status bar: a message, the problems count, and the running task with progress and Cancel."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QToolButton

from gui.worker import Task, TaskRunner


class TaskStatus(QObject):
    """Fills a QStatusBar and follows task runners. Only `progress_runners` show progress:
    a quick task (the token view, ~50 ms) would only make the bar flicker."""

    def __init__(self, bar: QStatusBar, progress_runners: list[TaskRunner], on_cancel: Callable[[], None],
                 on_problems: Callable[[], None]):
        super().__init__(bar)
        self.runners = progress_runners
        self.label = QLabel("Ready")
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.problems_button = QToolButton(text="", autoRaise=True)
        self.problems_button.setStyleSheet("color: #8a4b00;")
        self.problems_button.setToolTip("Show or hide the Problems list")
        self.problems_button.clicked.connect(lambda: on_problems())
        self.problems_button.hide()
        self.task_label = QLabel()  # what the running task is doing, beside its progress bar
        self.task_label.setTextFormat(Qt.TextFormat.PlainText)
        self.task_label.setStyleSheet("color: #404040;")
        self.progress = QProgressBar()
        self.progress.setFixedWidth(240)
        self.cancel_button = QToolButton(text="Cancel")
        self.cancel_button.setToolTip("Cancel the running task (Esc)")
        self.cancel_button.clicked.connect(lambda: on_cancel())
        bar.addWidget(self.label, 1)
        for widget in (self.problems_button, self.task_label, self.progress, self.cancel_button):
            bar.addPermanentWidget(widget)
        for runner in progress_runners:
            runner.started.connect(self._started)
            runner.busy_changed.connect(self.update)
        self.update()

    def set_message(self, text: str) -> None:
        self.label.setText(text)

    def set_problem_count(self, n: int) -> None:
        self.problems_button.setText(f"⚠ {n} problem{'s' if n != 1 else ''}")
        self.problems_button.setVisible(n > 0)

    def busy(self) -> bool:
        return any(r.is_busy() for r in self.runners)

    def _started(self, task: Task) -> None:
        if self.active() is task:
            self.progress.setRange(0, 0)  # indeterminate until the task reports counts
            self.progress.setFormat("")
        self.update()

    def active(self):
        """The first runner's task, else the next's: the model task has priority over reading."""
        for runner in self.runners:
            if runner.active() is not None:
                return runner.active()
        return None

    def show_progress(self, task: Task, done: int, total: int, message: str) -> None:
        if message:
            task.message = message
        if task is self.active() and total > 0 and task.key != "teacher":  # loading has no counts
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.progress.setFormat("%p%")
        self.update()

    def update(self, *_args) -> None:
        busy = self.busy()
        task = self.active()
        if task is not None:
            self.task_label.setText(f"{task.title}  {task.message}".strip())
        for widget in (self.task_label, self.progress, self.cancel_button):
            widget.setVisible(busy)
        if not busy and self.label.text() == "Cancelling…":
            self.label.setText("Ready")
