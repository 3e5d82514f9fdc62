"""One state object handed to long tasks: progress reports and cancellation checks.

Mirrors Orange's concurrent `TaskState`: the task calls `report` and `check_cancelled`;
the caller (CLI progress bar, GUI bridge) supplies the callback and sets `cancel()`.
"""

import threading
import time
from typing import Callable, Optional

from core.errors import Cancelled

ProgressCallback = Callable[[int, int, str], None]


class TaskState:
    def __init__(self, on_progress: Optional[ProgressCallback] = None):
        self._on_progress = on_progress
        self._cancel = threading.Event()
        self.started = time.monotonic()

    def report(self, done: int, total: int, message: str = "") -> None:
        if self._on_progress is not None:
            self._on_progress(done, total, message)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise Cancelled if cancel() was called; tasks call this at least once a second."""
        if self._cancel.is_set():
            raise Cancelled()
