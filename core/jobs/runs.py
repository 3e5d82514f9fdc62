"""A run is a folder under data_dir()/runs, and everything about it lives there:

    spec.toml        the job spec, as launched
    status.json      state, pid, host, heartbeat, step, message, error (atomic rewrite)
    metrics.jsonl    one JSON object per logged step, append-only (a resume re-logs steps
                     after its checkpoint; readers keep the last row per step)
    log.txt          what happened, with times
    checkpoints/step-NNNNNNNN/   SAE weights (safetensors) + trainer state (safetensors + JSON);
                     written in a temporary folder and renamed, so any step-* folder is whole
    artifacts/       the final SAE and eval.json

A run whose process died (pid gone, or no heartbeat for STALE_SECONDS) reads as interrupted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Optional

from core import paths
from core.jobs.spec import JobSpec, SpecError

STATES = ("queued", "running", "paused", "done", "failed", "cancelled", "interrupted")
LIVE_STATES = ("queued", "running", "paused")
STALE_SECONDS = 30.0
CHECKPOINT_PREFIX = "step-"


def runs_root() -> Path:
    """Where runs are kept: data_dir()/runs (DISTILLSCOPE_DATA_DIR moves it)."""
    root = paths.data_dir() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Run:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._status: Optional[dict] = None

    # -- creating and opening ------------------------------------------------------------------

    @classmethod
    def create(cls, spec: JobSpec, root: Optional[Path] = None) -> "Run":
        spec.validate()
        root = Path(root) if root is not None else runs_root()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{_slug(spec.display_name())}"
        for n in range(1000):
            folder = root / (base if n == 0 else f"{base}-{n}")
            try:
                folder.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        run = cls(folder)
        paths.atomic_write_text(folder / "spec.toml", spec.to_toml())
        run.write_status(state="queued", created=time.time(), pid=os.getpid(),
                         host=socket.gethostname(), step=0, total_steps=spec.train.total_steps,
                         message="Waiting to start", error=None)
        return run

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def spec(self) -> JobSpec:
        try:
            return JobSpec.from_toml_file(self.folder / "spec.toml")
        except SpecError as exc:
            raise SpecError(f"Run '{self.id}': {exc.what}", exc.hint)

    @property
    def checkpoints_dir(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def artifacts_dir(self) -> Path:
        return self.folder / "artifacts"

    # -- status ----------------------------------------------------------------------------------

    def status(self, reload: bool = True) -> dict:
        if reload or self._status is None:
            try:
                self._status = json.loads((self.folder / "status.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._status = {"state": "interrupted", "message": "status.json is missing"}
        return dict(self._status)

    def write_status(self, **updates) -> dict:
        status = self.status(reload=self._status is None)
        status.update(updates)
        status["updated"] = time.time()
        paths.atomic_write_text(self.folder / "status.json", json.dumps(status, indent=1))
        self._status = status
        return status

    def effective_state(self, status: Optional[dict] = None) -> str:
        """The recorded state, except that a live state whose process is gone reads 'interrupted'."""
        status = status if status is not None else self.status()
        state = status.get("state", "interrupted")
        if state not in LIVE_STATES:
            return state if state in STATES else "interrupted"
        if status.get("host") == socket.gethostname() and status.get("pid"):
            if not _pid_alive(int(status["pid"])):
                return "interrupted"
        if state != "queued" and time.time() - float(status.get("heartbeat", 0)) > STALE_SECONDS:
            return "interrupted"
        return state

    # -- metrics and log -------------------------------------------------------------------------

    def append_metrics(self, row: dict) -> None:
        with open(self.folder / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def read_metrics(self, offset: int = 0) -> tuple[list[dict], int]:
        """Rows appended since byte `offset` (whole lines only) and the offset to read from next."""
        try:
            with open(self.folder / "metrics.jsonl", "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        rows = []
        for line in data[:end].splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a torn line from a killed process
        return rows, offset + end

    def metrics(self) -> list[dict]:
        """All logged rows in step order, the last one written winning for a repeated step."""
        rows, _ = self.read_metrics()
        by_step = {}
        for row in rows:
            by_step[row.get("step", len(by_step))] = row
        return [by_step[s] for s in sorted(by_step)]

    def log(self, message: str) -> None:
        with open(self.folder / "log.txt", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}\n")

    def read_log(self) -> str:
        try:
            return (self.folder / "log.txt").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoints(self) -> list[Path]:
        """Whole checkpoints, oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.iterdir()
                 if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.name[5:]))

    def latest_checkpoint(self) -> Optional[Path]:
        found = self.checkpoints()
        return found[-1] if found else None

    def write_checkpoint(self, step: int, write, keep: int = 2) -> Path:
        """`write(folder)` fills a temporary folder, which is then renamed into place whole."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        final = self.checkpoints_dir / f"{CHECKPOINT_PREFIX}{step:08d}"
        if final.exists():  # the same step again (e.g. cancel right after a checkpoint)
            return final
        tmp = self.checkpoints_dir / f".tmp-{step:08d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write(tmp)
        os.replace(tmp, final)
        for old in self.checkpoints()[:-keep]:
            # Renamed out of the step-* names first: a kill during the delete must not leave a
            # half-deleted folder that still reads as a checkpoint.
            doomed = old.with_name(f".tmp-del-{old.name}")
            shutil.rmtree(doomed, ignore_errors=True)  # one a kill left half deleted
            os.replace(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        for stale in self.checkpoints_dir.glob(".tmp-*"):  # left by a killed process
            if stale != tmp:
                shutil.rmtree(stale, ignore_errors=True)
        return final


def list_runs(root: Optional[Path] = None) -> list[Run]:
    """Runs under `root` (default runs_root()), newest first."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    runs = [Run(p) for p in root.iterdir() if (p / "spec.toml").is_file()]
    return sorted(runs, key=lambda r: r.id, reverse=True)
