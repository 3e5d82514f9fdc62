"""Running a job: the context it talks to, `execute` (one run, to the end), and `Runner`, which
executes one run at a time on a background thread for the GUI.

A job is a function `job(spec, ctx)`. The context is a TaskState, so core functions that take a
`state` (teacher loading, extraction, streaming) report through it; its `check_cancelled()` also
holds while the run is paused, so pause and cancel work in every stage, not only in training.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import traceback
from typing import TYPE_CHECKING, Callable, Optional

from core.errors import Cancelled, DistillscopeError
from core.jobs.runs import Run
from core.progress import TaskState

if TYPE_CHECKING:
    from core.models import Teacher

EventCallback = Callable[[str, str, dict], None]  # (kind, run id, payload)
# (source, device) -> a teacher the app already holds, with its own hooks, or None
TeacherProvider = Callable[[str, Optional[str]], Optional["Teacher"]]
HEARTBEAT_SECONDS = 1.0


class JobContext(TaskState):
    """What a job sees: progress, metrics, log, pause/cancel, heartbeat, and the run folder.
    On a data-parallel rank other than 0 (`main=False`) nothing is written."""

    def __init__(self, run: Run, on_event: Optional[EventCallback] = None, main: bool = True,
                 teachers: Optional[TeacherProvider] = None):
        super().__init__()
        self.run = run
        self._teachers = teachers
        self.main = main
        self._on_event = on_event
        self._running = threading.Event()
        self._running.set()
        self._last_beat = 0.0
        self._progress = (0, 0, "")
        self.step = 0  # the job's training step, for status.json
        self.elapsed_before = 0.0  # training seconds of earlier attempts (set on resume)
        self._active_since = time.monotonic()

    # -- controls (thread-safe; called by the runner or a signal handler) ------------------------

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def should_stop(self) -> bool:
        return self.cancelled

    def wait_if_paused(self) -> None:
        """Block while paused (until resumed or cancelled), keeping the heartbeat alive."""
        if self._running.is_set() or self.cancelled:
            return
        paused_at = time.monotonic()
        self._set_state("paused", "Paused")
        while not self._running.wait(0.1) and not self.cancelled:
            self.beat()
        self._active_since += time.monotonic() - paused_at  # pauses do not count as run time
        self._set_state("running", self._progress[2])

    def check_cancelled(self) -> None:
        self.wait_if_paused()
        super().check_cancelled()
        self.beat()

    def load_teacher(self, source: str, device: Optional[str] = None) -> "Teacher":
        """The teacher a job asks for: the app's loaded one when it matches (no second load, and
        no seconds of GIL-holding tokenizer build beside the interface), else loaded here."""
        held = self._teachers(source, device) if self._teachers is not None else None
        if held is not None:
            self.log(f"using the teacher the app has loaded: {held.name}")
            return held
        from core.models import load_teacher

        return load_teacher(source, device=device, state=self)

    # -- reports ---------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds this run has spent running, over all attempts, pauses excluded."""
        return self.elapsed_before + time.monotonic() - self._active_since

    def report(self, done: int, total: int, message: str = "") -> None:
        self._progress = (done, total, message)
        self._emit("progress", {"done": done, "total": total, "message": message})
        self.beat()

    def metric(self, row: dict) -> None:
        row = {**row, "time": round(self.elapsed(), 3), "wall": time.time()}
        if self.main:
            self.run.append_metrics(row)
        self._emit("metrics", row)

    def log(self, message: str) -> None:
        if self.main:
            self.run.log(message)
        self._emit("log", {"message": message})

    def save_checkpoint(self, trainer, write_model: Optional[Callable] = None, meta: Optional[dict] = None) -> None:
        """A checkpoint folder of every job: `write_model(folder)` (weights, when the trainer's
        state does not hold them), trainer.safetensors (`trainer.state_tensors()`) and
        trainer.json (`trainer.state_meta()`, the elapsed time and `meta`), renamed into place."""
        if not self.main:
            return
        import json

        from safetensors.torch import save_file

        from core import paths

        def write(folder) -> None:
            if write_model is not None:
                write_model(folder)
            save_file(trainer.state_tensors(), str(folder / "trainer.safetensors"))
            info = {**trainer.state_meta(), "elapsed": self.elapsed(), **(meta or {})}
            paths.atomic_write_text(folder / "trainer.json", json.dumps(info, indent=1))

        path = self.run.write_checkpoint(trainer.step, write, keep=self.run.spec.run.keep_checkpoints)
        self.run.write_status(checkpoint_step=trainer.step)
        self.log(f"checkpoint at step {trainer.step:,}: {path.name}")

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.main or (not force and now - self._last_beat < HEARTBEAT_SECONDS):
            return
        self._last_beat = now
        done, total, message = self._progress
        self.run.write_status(heartbeat=time.time(), step=self.step, progress=done,
                              progress_total=total, message=message)

    def _set_state(self, state: str, message: str = "", **extra) -> None:
        if self.main:
            self.run.write_status(state=state, message=message, heartbeat=time.time(), **extra)
        self._emit("state", {"state": state, "message": message, **extra})

    def _emit(self, kind: str, payload: dict) -> None:
        if self._on_event is not None:
            self._on_event(kind, self.run.id, payload)


def _job_for(kind: str):
    if kind == "variant":
        from core.jobs.variant_job import run_variant_job

        return run_variant_job
    if kind == "crosscoder":
        from core.jobs.crosscoder_job import run_crosscoder_job

        return run_crosscoder_job
    from core.jobs.sae_job import run_sae_job
    from core.jobs.student_job import run_student_job

    return {"sae": run_sae_job, "student": run_student_job}[kind]


def execute(run: Run, ctx: Optional[JobContext] = None) -> str:
    """Run (or resume, when it has a checkpoint) `run` to its end in this thread; never raises
    for a job's own failure. Returns the final state: done, failed or cancelled."""
    ctx = ctx or JobContext(run)
    resuming = run.latest_checkpoint() is not None
    ctx._set_state("running", "Resuming" if resuming else "Starting", pid=os.getpid(),
                   host=socket.gethostname(), started=time.time(), error=None)
    ctx.log(f"{'resumed' if resuming else 'started'} in process {os.getpid()}")
    try:
        spec = run.spec
        _job_for(spec.kind)(spec, ctx)
        final, message, error = "done", "Finished", None
    except Cancelled:
        final, message, error = "cancelled", "Cancelled; resume continues from the last checkpoint", None
    except DistillscopeError as exc:
        final, message, error = "failed", str(exc), str(exc)
    except Exception as exc:  # a bug or an unexpected library error: keep the traceback
        if ctx.main:
            run.log(traceback.format_exc())
        final = "failed"
        message = error = (f"Unexpected error: {exc.__class__.__name__}: {exc}. "
                           "The run's log.txt has the details.")
    ctx.log(f"{final}: {message}")
    ctx._set_state(final, message, error=error, ended=time.time(), step=ctx.step)
    return final


class Runner:
    """Executes submitted runs one at a time on a daemon thread. On a CPU it leaves one core to
    the interface (torch's intra-op threads = cores - 1). Thread-safe; events go to `on_event`
    from the worker thread (the GUI forwards them to its own thread). `teachers` lends jobs a
    teacher the app already holds."""

    def __init__(self, on_event: Optional[EventCallback] = None, leave_core: bool = True,
                 teachers: Optional[TeacherProvider] = None):
        self._on_event = on_event
        self._teachers = teachers
        self._leave_core = leave_core
        self._queue: "queue.Queue[Optional[Run]]" = queue.Queue()
        self._lock = threading.Lock()
        self._queued: list[Run] = []
        self.active: Optional[Run] = None
        self.context: Optional[JobContext] = None
        self._thread = threading.Thread(target=self._loop, name="distillscope-runner", daemon=True)
        self._thread.start()

    def submit(self, run: Run) -> None:
        run.write_status(state="queued", pid=os.getpid(), host=socket.gethostname(),
                         message="Waiting to start", error=None)
        with self._lock:
            self._queued.append(run)
        self._emit("state", run.id, {"state": "queued", "message": "Waiting to start"})
        self._queue.put(run)

    def queued_ids(self) -> list[str]:
        with self._lock:
            return [run.id for run in self._queued]

    def is_busy(self) -> bool:
        with self._lock:
            return self.active is not None or bool(self._queued)

    def pause(self) -> None:
        if self.context is not None:
            self.context.pause()

    def resume(self) -> None:
        if self.context is not None:
            self.context.resume()

    def cancel(self, run_id: Optional[str] = None) -> None:
        """Cancel the active run (or the one named); a queued run is dropped from the queue."""
        with self._lock:
            for run in list(self._queued):
                if run.id == run_id:
                    self._queued.remove(run)
                    run.write_status(state="cancelled", message="Cancelled before it started")
                    self._emit("state", run.id, {"state": "cancelled", "message": "Cancelled"})
                    return
            ctx = self.context
        if ctx is not None and (run_id is None or ctx.run.id == run_id):
            ctx.cancel()

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._lock:
            for run in self._queued:
                run.write_status(state="cancelled", message="The app was closed before it started")
            self._queued.clear()
        if self.context is not None:
            self.context.cancel()
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            run = self._queue.get()
            if run is None:
                return
            with self._lock:
                if run not in self._queued:
                    continue  # cancelled while queued
                self._queued.remove(run)
                self.active = run
                self.context = JobContext(run, self._on_event, teachers=self._teachers)
            try:
                if self._leave_core:
                    import torch

                    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
                execute(run, self.context)
            finally:
                with self._lock:
                    self.active = None
                    self.context = None
                self._emit("idle", run.id, {})

    def _emit(self, kind: str, run_id: str, payload: dict) -> None:
        if self._on_event is not None:
            self._on_event(kind, run_id, payload)
