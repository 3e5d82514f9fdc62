"""The core job Runner, seen from the GUI thread: its events arrive as a queued Qt signal."""

from __future__ import annotations

import threading
from typing import Optional

from PySide6.QtCore import QObject, Qt, Signal, Slot

from core.jobs import JobSpec, Run, Runner


class RunBridge(QObject):
    """Owns the app's one Runner. `event(kind, run_id, payload)` is emitted on the GUI thread for
    kind in state / progress / metrics / log / idle. Metrics and status are also on disk in the
    run folder, which is what views read, so runs started from the CLI show up the same way."""

    event = Signal(str, str, dict)
    _from_worker = Signal(str, str, dict)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._from_worker.connect(self._relay, Qt.ConnectionType.QueuedConnection)
        self._teacher = None
        self._teacher_lock = threading.Lock()
        self.runner = Runner(on_event=lambda kind, run_id, payload: self._from_worker.emit(kind, run_id, dict(payload)),
                             teachers=self._lend_teacher)

    def share_teacher(self, teacher) -> None:
        """A twin of the app's loaded teacher kept for jobs (or None): a job asking for the same
        model runs on it instead of loading its own, which would hold the GIL for a second beside
        the interface. Jobs run one at a time, so they never share it with each other."""
        with self._teacher_lock:
            self._teacher = teacher

    def _lend_teacher(self, source: str, device: Optional[str]):
        with self._teacher_lock:
            teacher = self._teacher
        return teacher if teacher is not None and teacher.loaded_as(source, device) else None

    @Slot(str, str, dict)
    def _relay(self, kind: str, run_id: str, payload: dict) -> None:
        self.event.emit(kind, run_id, payload)

    def launch(self, spec: JobSpec) -> Run:
        """A new run folder for `spec`, queued to start when the runner is free."""
        run = Run.create(spec)
        self.runner.submit(run)
        return run

    def resume_run(self, run: Run) -> None:
        """Continue an interrupted, cancelled or failed run from its latest checkpoint."""
        self.runner.submit(run)

    def pause(self) -> None:
        self.runner.pause()

    def resume(self) -> None:
        self.runner.resume()

    def cancel(self, run_id: Optional[str] = None) -> None:
        self.runner.cancel(run_id)

    def active_run_id(self) -> Optional[str]:
        run = self.runner.active
        return run.id if run is not None else None

    def is_paused(self) -> bool:
        ctx = self.runner.context
        return ctx is not None and ctx.paused

    def queued_ids(self) -> list[str]:
        return self.runner.queued_ids()

    def shutdown(self) -> None:
        self.runner.shutdown()
