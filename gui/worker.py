"""Run core callables off the GUI thread: one worker thread per TaskRunner, one task at a time.

A task is `fn(state) -> result`, where `state` is a core `TaskState`. Each runner owns one QThread
that executes its tasks in order. The one rule: a task has a `key` ("teacher", "extract", ...), and
submitting a task cancels the running or queued task with the same key, because the newer request
supersedes it (a layer change restarts the extraction; a new selection replaces the token view).
Tasks with other keys wait their turn in a FIFO queue. Work that must not wait behind a long task
gets its own runner (the window has three: model, inspect, documents).

Everything the worker thread says reaches the GUI thread through queued signals of a bridge object
that lives on the GUI thread; the public signals are emitted on the GUI thread, so widgets and
`qtbot.waitSignal` can use them directly (NOTES: waiting on a worker-thread object warns).
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import traceback
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, QThread, Qt, Signal, Slot

from core.errors import Cancelled, DistillscopeError
from core.progress import TaskState

_ids = itertools.count(1)


class Task:
    """A unit of work plus the callbacks the GUI wants once it ends (called on the GUI thread)."""

    def __init__(self, key: str, fn: Callable[[TaskState], Any], *, title: str = "",
                 on_result: Optional[Callable[[Any], None]] = None,
                 on_error: Optional[Callable[[str, str], None]] = None):
        self.id = next(_ids)
        self.key, self.fn, self.title = key, fn, title or key
        self.on_result, self.on_error = on_result, on_error
        self.state: Optional[TaskState] = None
        self.message = ""  # its latest progress message, kept by the GUI
        self.outcome: Optional[str] = None  # "finished", "failed" or "cancelled" once it ended

    def __repr__(self) -> str:
        return f"Task({self.key!r}, #{self.id}, {self.outcome or 'pending'})"


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(what, hint) for a message box: core errors carry both; anything else is a bug report."""
    if isinstance(exc, DistillscopeError):
        return exc.what, exc.hint
    if isinstance(exc, (ValueError, MemoryError)):
        return str(exc) or exc.__class__.__name__, ""
    return (f"Unexpected error: {exc.__class__.__name__}: {exc}",
            "This is a bug in distillscope; the details were printed to the terminal.")


class _Bridge(QObject):
    """Lives on the GUI thread; the worker emits these, Qt queues them to the GUI thread."""

    began = Signal(object)
    progress = Signal(object, int, int, str)
    ended = Signal(object, object)  # task, result or exception


class _WorkerState(TaskState):
    """TaskState whose report() forwards progress to the GUI thread (queued, never direct)."""

    def __init__(self, runner: "TaskRunner", task: Task):
        super().__init__()
        self._runner, self._task = runner, task

    def report(self, done: int, total: int, message: str = "") -> None:
        self._runner._bridge.progress.emit(self._task, done, total, message)


class _Thread(QThread):
    def __init__(self, runner: "TaskRunner"):
        super().__init__()
        self.runner = runner
        self.cond = threading.Condition()
        self.queue: collections.deque[Task] = collections.deque()
        self.current: Optional[Task] = None
        self.stopping = False

    def run(self) -> None:
        if self.runner.torch_threads:
            import torch  # here, not at import time: the GUI module must not pay for torch
            torch.set_num_threads(self.runner.torch_threads)
        while True:
            with self.cond:
                while not (self.queue or self.stopping):
                    self.cond.wait()
                if self.stopping:
                    return
                task = self.current = self.queue.popleft()
            self._execute(task)
            with self.cond:
                self.current = None

    def _execute(self, task: Task) -> None:
        if task.state.cancelled:
            self.runner._bridge.ended.emit(task, Cancelled())
            return
        self.runner._bridge.began.emit(task)
        try:
            result = task.fn(task.state)
        except BaseException as exc:  # reported to the GUI; a worker thread must never die
            if not isinstance(exc, DistillscopeError):
                traceback.print_exc()
            result = exc
        self.runner._bridge.ended.emit(task, result)


class TaskRunner(QObject):
    """One worker thread plus a queue. Create on the GUI thread; call `shutdown()` before exit."""

    started = Signal(object)  # Task
    progress = Signal(object, int, int, str)  # task, done, total, message
    finished = Signal(object, object)  # Task, result
    failed = Signal(object, str, str)  # Task, what, hint
    cancelled = Signal(object)  # Task
    busy_changed = Signal(bool)  # a task is queued or running

    def __init__(self, parent: Optional[QObject] = None, torch_threads: Optional[int] = None):
        super().__init__(parent)
        # Leave one core to the GUI thread (NOTES: 2 cores; a busy GUI core stalls the event loop).
        self.torch_threads = torch_threads if torch_threads is not None else max(1, (os.cpu_count() or 2) - 1)
        self._bridge = _Bridge(self)
        q = Qt.ConnectionType.QueuedConnection
        self._bridge.began.connect(self._on_began, q)
        self._bridge.progress.connect(self._on_progress, q)
        self._bridge.ended.connect(self._on_ended, q)
        self._thread = _Thread(self)
        self._open: list[Task] = []  # submitted tasks that have not ended, GUI-thread view
        self._busy = False
        self._thread.start()

    # ------------------------------------------------------------------ API (GUI thread)

    def submit(self, task: Task) -> Task:
        task.state = _WorkerState(self, task)
        t = self._thread
        with t.cond:
            for old in list(t.queue) + ([t.current] if t.current else []):
                if old.key == task.key:
                    old.state.cancel()  # a queued one is reported cancelled when dequeued
            t.queue.append(task)
            self._open.append(task)
            t.cond.notify()
        self._set_busy()
        return task

    def cancel(self, key: Optional[str] = None) -> None:
        """Cancel the running and queued tasks (only those with `key` if given)."""
        t = self._thread
        with t.cond:
            for task in list(t.queue) + ([t.current] if t.current else []):
                if key is None or task.key == key:
                    task.state.cancel()

    def is_busy(self) -> bool:
        return self._busy

    def running(self) -> Optional[Task]:
        return self._thread.current

    def active(self) -> Optional[Task]:
        """The running task, else the next queued one (what a status line should name)."""
        return self._thread.current or (self._open[0] if self._open else None)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel everything and join the thread. True if it finished within the timeout."""
        t = self._thread
        with t.cond:
            for task in list(t.queue) + ([t.current] if t.current else []):
                task.state.cancel()
            t.queue.clear()
            t.stopping = True
            t.cond.notify()
        ok = t.wait(timeout_ms)
        self._open.clear()
        self._set_busy()
        return ok

    def is_finished(self) -> bool:
        return self._thread.isFinished()

    # ------------------------------------------------------------------ bridge slots (GUI thread)

    @Slot(object)
    def _on_began(self, task: Task) -> None:
        self.started.emit(task)

    @Slot(object, int, int, str)
    def _on_progress(self, task: Task, done: int, total: int, message: str) -> None:
        if not task.state.cancelled:
            self.progress.emit(task, done, total, message)

    @Slot(object, object)
    def _on_ended(self, task: Task, result: object) -> None:
        if task in self._open:
            self._open.remove(task)
        # Once cancelled, a task's result is stale even if it got to finish: it was superseded.
        if isinstance(result, Cancelled) or task.state.cancelled:
            task.outcome = "cancelled"
            self.cancelled.emit(task)
        elif isinstance(result, BaseException):
            task.outcome = "failed"
            what, hint = describe_error(result)
            if task.on_error:
                task.on_error(what, hint)
            self.failed.emit(task, what, hint)
        else:
            task.outcome = "finished"
            if task.on_result:
                task.on_result(result)
            self.finished.emit(task, result)
        self._set_busy()

    def _set_busy(self) -> None:
        busy = bool(self._open)
        if busy != self._busy:
            self._busy = busy
            self.busy_changed.emit(busy)
